package api

import (
	"context"
	"errors"
	"mime"
	"net/http"
	"regexp"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/registry"
	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
	"github.com/tensorguard/tensorguardflow/internal/wire"
	"github.com/tensorguard/tensorguardflow/tgsp"
)

// Publishers and packages (issue 5). Publishers are plain store rows
// audited through mutate; pushes and deletes run in the registry's
// transaction, which appends the audit entry through appendChange.

var (
	publisherNameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)
	keyIDFormRe     = regexp.MustCompile(`^[0-9a-f]{32}$`)
)

func validatePublisherName(name string) error {
	switch {
	case !publisherNameRe.MatchString(name):
		return badRequest("field \"name\": %q must be 1 to 63 of [A-Za-z0-9._-], starting with a letter or digit", name)
	case keyIDFormRe.MatchString(name):
		return badRequest("field \"name\": %q has the form of a key id (32 hex digits), which names publishers by key", name)
	}
	return nil
}

// publisherReader is what *store.Store and *store.Tx share for publishers.
type publisherReader interface {
	GetPublisher(ctx context.Context, tenant, name string) (store.Publisher, error)
	GetPublisherByKeyID(ctx context.Context, tenant, keyID string) (store.Publisher, error)
}

var (
	_ publisherReader = (*store.Store)(nil)
	_ publisherReader = (*store.Tx)(nil)
)

// resolvePublisher finds a publisher by key id (32 hex digits) or name.
func resolvePublisher(ctx context.Context, s publisherReader, tenant, ref string) (store.Publisher, error) {
	var p store.Publisher
	var err error
	if keyIDFormRe.MatchString(ref) {
		p, err = s.GetPublisherByKeyID(ctx, tenant, ref)
	} else {
		p, err = s.GetPublisher(ctx, tenant, ref)
	}
	if errors.Is(err, store.ErrNotFound) {
		return store.Publisher{}, errorf(http.StatusNotFound, codeNotFound, "publisher %q not found", ref)
	}
	return p, err
}

func (a *handler) listPublishers(w http.ResponseWriter, r *http.Request) error {
	p, err := caller(r)
	if err != nil {
		return err
	}
	pubs, err := a.store.ListPublishers(r.Context(), p.Tenant)
	if err != nil {
		return err
	}
	out := make([]Publisher, 0, len(pubs))
	for _, pub := range pubs {
		out = append(out, NewPublisher(pub))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (a *handler) getPublisher(w http.ResponseWriter, r *http.Request) error {
	p, err := caller(r)
	if err != nil {
		return err
	}
	pub, err := resolvePublisher(r.Context(), a.store, p.Tenant, r.PathValue("publisher"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, NewPublisher(pub))
	return nil
}

func (a *handler) createPublisher(w http.ResponseWriter, r *http.Request) error {
	var req PublisherCreate
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	if err := validatePublisherName(req.Name); err != nil {
		return err
	}
	key, err := tgsp.ParseSignerPublicKey([]byte(req.PublicKeyPEM))
	if err != nil {
		return badRequest("field \"public_key_pem\": %v (want the PREFIX.pub that `tgsp keygen --kind signer` wrote)", err)
	}
	var out store.Publisher
	err = a.mutate(r, "publisher.create", func(tx *store.Tx, p principal) (change, error) {
		pub, err := tx.CreatePublisher(r.Context(), p.Tenant, store.Publisher{Name: req.Name, KeyID: key.KeyID(), PublicKey: key.Bytes()})
		if err != nil {
			return change{}, onConflict(err, "publisher name %q or key %s is already pinned", req.Name, key.KeyID())
		}
		out = pub
		return change{target: pub.KeyID, details: map[string]any{"name": pub.Name, "key_id": pub.KeyID}}, nil
	})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, NewPublisher(out))
	return nil
}

func (a *handler) deletePublisher(w http.ResponseWriter, r *http.Request) error {
	err := a.mutate(r, "publisher.delete", func(tx *store.Tx, p principal) (change, error) {
		pub, err := resolvePublisher(r.Context(), tx, p.Tenant, r.PathValue("publisher"))
		if err != nil {
			return change{}, err
		}
		if err := tx.DeletePublisher(r.Context(), p.Tenant, pub.Name); err != nil {
			return change{}, err
		}
		return change{target: pub.KeyID, details: map[string]any{"name": pub.Name, "key_id": pub.KeyID}}, nil
	})
	if err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// registryErr maps the registry's refusals to the API's statuses and
// codes; their messages name what is wrong with the package, never
// internals. Anything else passes through (500).
func registryErr(err error) error {
	const unprocessable = http.StatusUnprocessableEntity
	for _, m := range []struct {
		sentinel error
		status   int
		code     string
	}{
		{registry.ErrTooLarge, http.StatusRequestEntityTooLarge, codeTooLarge},
		{registry.ErrUpload, http.StatusBadRequest, codeBadRequest},
		{registry.ErrInvalidPackage, unprocessable, wire.CodeInvalidPackage},
		{registry.ErrUnknownPublisher, unprocessable, wire.CodeUnknownPublisher},
		{registry.ErrNotRecipient, unprocessable, wire.CodeNotARecipient},
		{registry.ErrExpired, unprocessable, wire.CodePackageExpired},
		{registry.ErrConflict, http.StatusConflict, codeConflict},
		{registry.ErrInUse, http.StatusConflict, codeConflict},
		{registry.ErrNotFound, http.StatusNotFound, codeNotFound},
	} {
		if errors.Is(err, m.sentinel) {
			return errorf(m.status, m.code, "%s", clientMessage(err, m.sentinel.Error()))
		}
	}
	return err
}

func (a *handler) registry() (*registry.Registry, error) {
	if a.packages == nil {
		return nil, errorf(http.StatusServiceUnavailable, codeInternal, "the package registry is not running on this server")
	}
	return a.packages, nil
}

func (a *handler) getRecipient(w http.ResponseWriter, r *http.Request) error {
	reg, err := a.registry()
	if err != nil {
		return err
	}
	p, err := caller(r)
	if err != nil {
		return err
	}
	k, err := reg.RecipientPublicKey(r.Context(), p.Tenant)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, RecipientKey{KeyID: k.KeyID(), PublicKeyPEM: string(k.MarshalPEM())})
	return nil
}

func (a *handler) listPackages(w http.ResponseWriter, r *http.Request) error {
	p, err := caller(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	if err := checkQuery(q, "name"); err != nil {
		return err
	}
	name, err := singleQuery(q, "name")
	if err != nil {
		return err
	}
	pkgs, err := a.store.ListPackages(r.Context(), p.Tenant, store.PackageFilter{Name: name})
	if err != nil {
		return err
	}
	out := make([]Package, 0, len(pkgs))
	for _, pkg := range pkgs {
		out = append(out, NewPackage(pkg))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (a *handler) getPackage(w http.ResponseWriter, r *http.Request) error {
	reg, err := a.registry()
	if err != nil {
		return err
	}
	p, err := caller(r)
	if err != nil {
		return err
	}
	pkg, err := reg.Lookup(r.Context(), p.Tenant, r.PathValue("package"))
	if err != nil {
		return registryErr(err)
	}
	writeJSON(w, http.StatusOK, NewPackageDetail(pkg))
	return nil
}

// pushPackage is POST /api/v1/packages: the body is the .tgsp file itself
// (application/octet-stream), streamed to the registry.
func (a *handler) pushPackage(w http.ResponseWriter, r *http.Request) error {
	reg, err := a.registry()
	if err != nil {
		return err
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/octet-stream" {
		return errorf(http.StatusUnsupportedMediaType, codeUnsupported, "Content-Type must be application/octet-stream (the .tgsp file)")
	}
	if r.ContentLength > reg.MaxPackageSize() {
		return errorf(http.StatusRequestEntityTooLarge, codeTooLarge, "the package is larger than this control plane's limit of %d bytes", reg.MaxPackageSize())
	}
	p, err := caller(r)
	if err != nil {
		return err
	}
	ctx := r.Context()
	pkg, created, err := reg.Push(ctx, p.Tenant, registry.UploadBody(w, r), func(tx *store.Tx, pkg store.Package) error {
		return a.appendChange(ctx, tx, p, "package.push", change{target: pkg.ID, details: map[string]any{
			"name": pkg.Name, "version": pkg.Version, "size": pkg.Size, "signed_id": pkg.SignedID, "publisher_key_id": pkg.PublisherKeyID,
		}})
	})
	registry.PrepareResponse(w)
	if err != nil {
		return registryErr(err)
	}
	status := http.StatusCreated
	if !created {
		status = http.StatusOK
	}
	writeJSON(w, status, NewPackage(pkg))
	return nil
}

func (a *handler) deletePackage(w http.ResponseWriter, r *http.Request) error {
	reg, err := a.registry()
	if err != nil {
		return err
	}
	p, err := caller(r)
	if err != nil {
		return err
	}
	ctx := r.Context()
	_, err = reg.Delete(ctx, p.Tenant, r.PathValue("package"), func(tx *store.Tx, pkg store.Package) error {
		return a.appendChange(ctx, tx, p, "package.delete", change{target: pkg.ID, details: map[string]any{
			"name": pkg.Name, "version": pkg.Version,
		}})
	})
	if err != nil {
		return registryErr(err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// downloadPackage is GET /api/v1/packages/{package}/blob: the .tgsp file,
// with range requests.
func (a *handler) downloadPackage(w http.ResponseWriter, r *http.Request) error {
	reg, err := a.registry()
	if err != nil {
		return err
	}
	p, err := caller(r)
	if err != nil {
		return err
	}
	pkg, blob, err := reg.OpenBlob(r.Context(), p.Tenant, r.PathValue("package"))
	if err != nil {
		return registryErr(err)
	}
	defer blob.Close()
	registry.ServeBlob(w, r, pkg, blob)
	return nil
}
