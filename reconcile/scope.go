package reconcile

import (
	"errors"
	"fmt"

	"github.com/guestward/guestward/proxmox"
)

// ErrNotInScope is returned, wrapped, by Apply and Revert for a guest on a
// node outside [Config].Nodes: another engine manages it.
var ErrNotInScope = errors.New("reconcile: guest is on a node this engine does not manage")

// nodeScope checks Config.Nodes and returns it as a set; nil when it is
// empty (every node).
func nodeScope(nodes []string) (map[string]bool, error) {
	if len(nodes) == 0 {
		return nil, nil
	}
	set := make(map[string]bool, len(nodes))
	for _, n := range nodes {
		if !proxmox.ValidNodeName(n) {
			return nil, fmt.Errorf("%w: Nodes: %.80q is not a valid Proxmox node name", ErrConfig, n)
		}
		if set[n] {
			return nil, fmt.Errorf("%w: Nodes: %q is listed twice", ErrConfig, n)
		}
		set[n] = true
	}
	return set, nil
}

// inScope reports whether the engine acts on guests of ref's node.
func (e *Engine) inScope(ref proxmox.Ref) bool {
	return e.nodes == nil || e.nodes[ref.Node]
}

// checkScope refuses a guest outside the engine's nodes.
func (e *Engine) checkScope(ref proxmox.Ref) error {
	if e.inScope(ref) {
		return nil
	}
	return fmt.Errorf("%w: %s (this engine manages %d node(s): Config.Nodes)", ErrNotInScope, ref, len(e.nodes))
}

// scoped returns the declared guests on the engine's nodes: ds itself when
// every one is, or the engine has no Nodes.
func (e *Engine) scoped(ds []Desired) []Desired {
	if e.nodes == nil {
		return ds
	}
	for i, d := range ds {
		if !e.inScope(d.Ref) {
			out := append(make([]Desired, 0, len(ds)-1), ds[:i]...)
			for _, d := range ds[i+1:] {
				if e.inScope(d.Ref) {
					out = append(out, d)
				}
			}
			return out
		}
	}
	return ds
}
