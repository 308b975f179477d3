// Package wire holds the types that cross a process boundary between the
// agent and the control plane (enrollment, API errors, MQTT payloads), so
// both sides compile against one definition. Changing a field here changes
// a contract: keep old fields readable, add new ones as optional.
package wire
