package api

import (
	"encoding/json"
	"time"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
	"github.com/tensorguard/tensorguardflow/tgsp"
)

// Publisher is a TGSP signer key the tenant trusts (GET /api/v1/publishers).
type Publisher struct {
	Name string `json:"name"`
	// KeyID is the tgsp key id (32 hex digits), as `tgsp keygen` prints it
	// and package manifests name it (publisher_key_id).
	KeyID        string    `json:"key_id"`
	PublicKeyPEM string    `json:"public_key_pem"`
	CreatedAt    time.Time `json:"created_at"`
}

// NewPublisher renders a stored publisher.
func NewPublisher(p store.Publisher) Publisher {
	out := Publisher{Name: p.Name, KeyID: p.KeyID, CreatedAt: p.CreatedAt}
	if k, err := tgsp.ParseSignerPublicKeyBytes(p.PublicKey); err == nil {
		out.PublicKeyPEM = string(k.MarshalPEM())
	}
	return out
}

// PublisherCreate is the body of POST /api/v1/publishers.
type PublisherCreate struct {
	Name string `json:"name"`
	// PublicKeyPEM is the signer public key file `tgsp keygen --kind
	// signer` wrote (PREFIX.pub).
	PublicKeyPEM string `json:"public_key_pem"`
}

// RecipientKey is GET /api/v1/packages/recipient: the control plane's TGSP
// recipient key of the tenant, to pack packages to.
type RecipientKey struct {
	KeyID        string `json:"key_id"`
	PublicKeyPEM string `json:"public_key_pem"`
}

// Package is a package in the tenant's registry.
type Package struct {
	// ID is the lowercase hex SHA-256 of the .tgsp file.
	ID      string `json:"id"`
	Name    string `json:"name"`
	Version string `json:"version"`
	// SignedID is the TGSP package id (SHA-256 of header and manifest).
	SignedID       string    `json:"signed_id"`
	Size           int64     `json:"size"`
	PublisherKeyID string    `json:"publisher_key_id"`
	ExpiresAt      time.Time `json:"expires_at"`
	CreatedAt      time.Time `json:"created_at"`
}

// NewPackage renders a stored package without its documents.
func NewPackage(p store.Package) Package {
	return Package{ID: p.ID, Name: p.Name, Version: p.Version, SignedID: p.SignedID, Size: p.Size,
		PublisherKeyID: p.PublisherKeyID, ExpiresAt: p.ExpiresAt, CreatedAt: p.CreatedAt}
}

// PackageDetail is GET /api/v1/packages/{package}: the package with its
// signed manifest and attached documents, as JSON exactly as stored (null
// when a document is absent).
type PackageDetail struct {
	Package
	Manifest json.RawMessage `json:"manifest"`
	DPCert   json.RawMessage `json:"dp_cert"`
	Evidence json.RawMessage `json:"evidence"`
}

// NewPackageDetail renders a stored package with its documents.
func NewPackageDetail(p store.Package) PackageDetail {
	d := PackageDetail{Package: NewPackage(p), Manifest: json.RawMessage(p.Manifest)}
	if p.DPCert != nil {
		d.DPCert = json.RawMessage(p.DPCert)
	}
	if p.Evidence != nil {
		d.Evidence = json.RawMessage(p.Evidence)
	}
	return d
}
