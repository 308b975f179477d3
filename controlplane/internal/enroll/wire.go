package enroll

import "github.com/tensorguard/tensorguardflow/internal/wire"

// The enrollment wire types are shared with the agent through internal/wire;
// these aliases keep this package's API self-contained.
type (
	Request         = wire.EnrollRequest
	TPMEvidence     = wire.TPMEvidence
	Challenge       = wire.Challenge
	ChallengeAnswer = wire.ChallengeAnswer
	Response        = wire.EnrollResponse
)

// TPM kinds a Request may state.
const (
	KindHardware  = wire.TPMKindHardware
	KindSWTPM     = wire.TPMKindSWTPM
	KindSimulated = wire.TPMKindSimulated
	KindNone      = wire.TPMKindNone
)
