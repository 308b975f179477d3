// Package models lists the base models TG-Tinker serves, for whoever
// composes the trainer (tg-controlplane's main).
package models

import (
	"github.com/tensorguard/tensorguardflow/trainer"
	"github.com/tensorguard/tensorguardflow/trainer/internal/bigram"
	"github.com/tensorguard/tensorguardflow/trainer/internal/lmsession"
)

// Default returns the served base models by name: tg-lm-base, the
// byte-level transformer fine-tuned with LoRA, and tg-bigram, the
// byte-bigram baseline that trains in milliseconds.
func Default() map[string]trainer.Factory {
	return map[string]trainer.Factory{
		lmsession.Name: lmsession.New,
		bigram.Name:    bigram.New,
	}
}
