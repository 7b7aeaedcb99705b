package reconcile

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// MarshalJSON writes d as one guest of the desired-state file (see
// [FileProvider]): {"node", "type", "vmid", "power", "config", "delete"},
// with every config value a JSON string, as Proxmox's API takes it. Power,
// config and delete are left out when empty. A hub can thus speak the file's
// format guest by guest, without its {"guests": [...]} envelope.
func (d Desired) MarshalJSON() ([]byte, error) {
	return json.Marshal(desiredWire{
		Node:   d.Ref.Node,
		Type:   string(d.Ref.Type),
		VMID:   d.Ref.VMID,
		Power:  string(d.Power),
		Config: d.Config,
		Delete: d.Delete,
	})
}

// desiredWire is what MarshalJSON writes; its members are guestMembers.
type desiredWire struct {
	Node   string            `json:"node"`
	Type   string            `json:"type"`
	VMID   int               `json:"vmid"`
	Power  string            `json:"power,omitempty"`
	Config map[string]string `json:"config,omitempty"`
	Delete []string          `json:"delete,omitempty"`
}

// UnmarshalJSON reads one guest in the format MarshalJSON writes, as
// strictly as [ParseDesiredJSON] reads a whole file: member names exactly as
// written there (not in other letter case), none repeated, in "config" too,
// only UTF-8; config values may be strings, numbers (kept digit for digit)
// or booleans (1 and 0). It only decodes: it does not validate the guest,
// which the provider or the engine does under the [ValidateOptions] in
// force (see [Desired.ValidateWith]). On error d is left unchanged.
func (d *Desired) UnmarshalJSON(data []byte) error {
	if err := strictJSONAt(data, placeGuest); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	dec.UseNumber()
	var g desiredGuest
	if err := dec.Decode(&g); err != nil {
		var syn *json.SyntaxError
		if errors.As(err, &syn) {
			return fmt.Errorf("malformed desired state: malformed JSON at byte %d: %w", syn.Offset, err)
		}
		return fmt.Errorf("malformed desired state: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("malformed desired state: data after the guest")
	}
	nd, problems := g.desiredAt("guest")
	if len(problems) > 0 {
		return &DesiredError{Problems: problems}
	}
	*d = nd
	return nil
}
