package tgctl

import (
	"fmt"
	"runtime"

	"github.com/spf13/cobra"
)

func (a *App) versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print tgctl's version (needs no server)",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			v := struct {
				Version  string `json:"version"`
				Go       string `json:"go"`
				Platform string `json:"platform"`
			}{version(), runtime.Version(), runtime.GOOS + "/" + runtime.GOARCH}
			if a.jsonOutput() {
				return writeJSON(a.Stdout, v)
			}
			_, err := fmt.Fprintf(a.Stdout, "tgctl %s (%s, %s)\n", v.Version, v.Go, v.Platform)
			return err
		},
	}
}
