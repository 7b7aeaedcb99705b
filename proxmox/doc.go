// Package proxmox is a thin, safe client for the Proxmox VE HTTP API, limited
// to what guestward needs to observe and mutate guests, and the vocabulary
// types ([Ref], [GuestType], [UPID]) the rest of guestward speaks.
package proxmox
