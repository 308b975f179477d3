// Package models lists the base models TG-Tinker serves, for whoever
// composes the trainer (tg-controlplane's main).
package models

import (
	"github.com/tensorguard/tensorguardflow/trainer"
	"github.com/tensorguard/tensorguardflow/trainer/internal/bigram"
)

// Default returns the served base models by name: tg-bigram, the
// byte-bigram baseline that trains in milliseconds.
func Default() map[string]trainer.Factory {
	return map[string]trainer.Factory{
		bigram.Name: bigram.New,
	}
}
