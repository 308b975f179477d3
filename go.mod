module github.com/tensorguard/tensorguardflow

go 1.26

require (
	github.com/cloudflare/circl v1.6.5
	github.com/spf13/cobra v1.10.2
)

require (
	github.com/inconshreveable/mousetrap v1.1.0 // indirect
	github.com/spf13/pflag v1.0.9 // indirect
	golang.org/x/sys v0.47.0 // indirect
)
