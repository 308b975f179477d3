// Package tgctl is the operator CLI of the control plane: one cobra command
// per operator route of docs/api.md, built on controlplane/client.
//
// # Output and exit codes
//
// Every command prints a table (text/tabwriter, fixed column order, times in
// RFC 3339 UTC, "-" for an empty cell) by default and, with -o json, the
// API's object(s) indented. Exit 0 on success; 1 when the command ran and
// failed, with one line on stderr — "tgctl: <CODE>: <message> (request
// <id>)" for an API error; 2 for a wrong command line.
//
// # Where the server and key come from
//
// Per setting: flags (--server, --api-key, --ca-file/--ca-hash) over the
// environment (TG_BASE_URL, TG_API_KEY, TG_CA_FILE/TG_CA_HASH) over the
// context file that `tgctl login` writes ($XDG_CONFIG_HOME/tensorguard/
// tgctl.yaml, else ~/.config/tensorguard/tgctl.yaml; mode 0600; several
// named contexts, --context picks one, else current_context). The CA file
// and hash are one setting: the first level that names either decides both.
// A context's API key and CA settings are used only for that context's own
// server, so --server elsewhere never receives the context's key. The API
// key is never printed, except by `apikey create`, once.
//
// # Audit verification
//
// `tgctl audit verify` streams the whole chain through internal/audit's
// Verifier on the client, so a server that lies about its log is caught as
// surely as an edited database. It stores each verified head checkpoint in
// the context as the next run's anchor, which is what catches deleted
// newest entries and consistent rewrites (see the audit package doc).
//
// # Adding commands
//
// addCommands in app.go is the one place commands are registered. A
// command that needs no server (`version`, and `tgctl dp`, which is pure
// computation with JSON on stdout) just never calls App.client.
package tgctl
