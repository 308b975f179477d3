package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
)

// SetDeviceKEMPublic records the KEM public key (package key grants) of a
// device of tenant that enrolled without one, and returns the device and
// whether this call set it. A device's key is set once: the same key again
// changes nothing (a retried request), another key is ErrConflict, an
// empty key ErrInvalid, an unknown device ErrNotFound. The key's format is
// the caller's to check.
func (o *ops) SetDeviceKEMPublic(ctx context.Context, tenant, id string, kem []byte) (Device, bool, error) {
	if len(kem) == 0 {
		return Device{}, false, fmt.Errorf("set KEM key of device %s: %w: empty key", id, ErrInvalid)
	}
	var d Device
	var set bool
	err := o.inTx(ctx, func(o *ops) error {
		var err error
		d, err = scanDevice(o.queryRowW(ctx, `UPDATE devices SET kem_public = ?
			WHERE tenant_id = ? AND id = ? AND kem_public IS NULL RETURNING `+deviceCols, kem, tenant, id))
		if err == nil {
			set = true
			return nil
		}
		if !errors.Is(err, ErrNotFound) {
			return err
		}
		// No row changed: no such device, or it has a key already.
		if d, err = scanDevice(o.queryRowW(ctx, `SELECT `+deviceCols+` FROM devices WHERE tenant_id = ? AND id = ?`, tenant, id)); err != nil {
			return err
		}
		if !bytes.Equal(d.KEMPublic, kem) {
			return fmt.Errorf("%w: the device has another KEM key", ErrConflict)
		}
		return nil
	})
	if err != nil {
		return Device{}, false, fmt.Errorf("set KEM key of device %s: %w", id, err)
	}
	return d, set, nil
}
