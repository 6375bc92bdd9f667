package nbd

import (
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Generic netlink "nbd" family (linux/nbd-netlink.h).
const (
	nbdGenlName    = "nbd"
	nbdGenlVersion = 1

	nbdCmdConnect    = 1
	nbdCmdDisconnect = 2

	nbdAttrIndex          = 1
	nbdAttrSizeBytes      = 2
	nbdAttrBlockSizeBytes = 3
	nbdAttrTimeout        = 4
	nbdAttrServerFlags    = 5
	nbdAttrSockets        = 7
	nbdSockItem           = 1
	nbdSockFD             = 1
)

// Kernel is a connection to the kernel's nbd driver over generic netlink.
// It connects /dev/nbdX devices to sockets served by this package.
type Kernel struct {
	nl     *netlink.Conn
	family uint16
}

// OpenKernel resolves the "nbd" generic netlink family. Without the nbd
// module loaded it fails with ErrNoKernelNBD.
func OpenKernel() (*Kernel, error) {
	nl, err := netlink.Dial(unix.NETLINK_GENERIC, nil)
	if err != nil {
		return nil, fmt.Errorf("open kernel nbd: netlink: %w", err)
	}
	family, err := genlFamily(nl, nbdGenlName)
	if err != nil {
		nl.Close()
		return nil, err
	}
	return &Kernel{nl: nl, family: family}, nil
}

// Close closes the netlink socket; connected devices stay connected.
func (k *Kernel) Close() error { return k.nl.Close() }

// genlFamily asks the generic netlink controller for a family's id.
func genlFamily(nl *netlink.Conn, name string) (uint16, error) {
	ae := netlink.NewAttributeEncoder()
	ae.String(unix.CTRL_ATTR_FAMILY_NAME, name)
	attrs, err := ae.Encode()
	if err != nil {
		return 0, err
	}
	msgs, err := nl.Execute(netlink.Message{
		Header: netlink.Header{Type: unix.GENL_ID_CTRL, Flags: netlink.Request},
		Data:   append([]byte{unix.CTRL_CMD_GETFAMILY, 1, 0, 0}, attrs...),
	})
	if errors.Is(err, unix.ENOENT) || errors.Is(err, os.ErrNotExist) {
		return 0, fmt.Errorf("open kernel nbd: %w (load it with `modprobe nbd`)", ErrNoKernelNBD)
	}
	if err != nil {
		return 0, fmt.Errorf("open kernel nbd: resolve genetlink family %q: %w", name, err)
	}
	for _, m := range msgs {
		if len(m.Data) < 4 {
			continue
		}
		ad, err := netlink.NewAttributeDecoder(m.Data[4:])
		if err != nil {
			return 0, err
		}
		for ad.Next() {
			if ad.Type() == unix.CTRL_ATTR_FAMILY_ID {
				return ad.Uint16(), nil
			}
		}
	}
	return 0, fmt.Errorf("open kernel nbd: %w: no family id in reply", ErrNoKernelNBD)
}

// Connect serves export e to a new /dev/nbdX (the first free one, or
// index when it is not negative) over a socket pair and returns the
// device index. The kernel speaks the transmission phase only, with
// simple replies; the connection counts in e.Conns() like any other.
// timeout is the kernel's per-request timeout (0 for its default).
func (k *Kernel) Connect(s *Server, e *Export, index int, timeout time.Duration) (int, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("connect %s to kernel nbd: %w", e.name, err)
	}
	kernelEnd := os.NewFile(uintptr(fds[0]), "nbd-kernel")
	defer kernelEnd.Close() // the kernel holds its own reference
	f := os.NewFile(uintptr(fds[1]), "nbd-server")
	nc, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return 0, fmt.Errorf("connect %s to kernel nbd: %w", e.name, err)
	}
	c := newConn(s, nc)
	flags := c.transmissionFlags(e)

	ae := netlink.NewAttributeEncoder()
	if index >= 0 {
		ae.Uint32(nbdAttrIndex, uint32(index))
	}
	ae.Uint64(nbdAttrSizeBytes, uint64(e.info.Size))
	ae.Uint64(nbdAttrBlockSizeBytes, uint64(max(e.info.MinBlock, 512)))
	ae.Uint64(nbdAttrServerFlags, uint64(flags))
	if timeout > 0 {
		ae.Uint64(nbdAttrTimeout, uint64(timeout/time.Second))
	}
	ae.Nested(nbdAttrSockets, func(nae *netlink.AttributeEncoder) error {
		nae.Nested(nbdSockItem, func(sae *netlink.AttributeEncoder) error {
			sae.Uint32(nbdSockFD, uint32(kernelEnd.Fd()))
			return nil
		})
		return nil
	})
	attrs, err := ae.Encode()
	if err != nil {
		nc.Close()
		return 0, err
	}
	// Serve before the kernel connects: it may send requests (partition
	// scan) at once.
	go func() {
		defer nc.Close()
		c.log = c.log.With("device", "kernel")
		c.run(e)
	}()
	msgs, err := k.nl.Execute(netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(k.family), Flags: netlink.Request},
		Data:   append([]byte{nbdCmdConnect, nbdGenlVersion, 0, 0}, attrs...),
	})
	if err != nil {
		nc.Close()
		return 0, fmt.Errorf("connect export %q to /dev/nbd: %w", e.name, err)
	}
	for _, m := range msgs {
		if len(m.Data) < 4 {
			continue
		}
		ad, err := netlink.NewAttributeDecoder(m.Data[4:])
		if err != nil {
			return 0, err
		}
		for ad.Next() {
			if ad.Type() == nbdAttrIndex {
				return int(ad.Uint32()), nil
			}
		}
	}
	if index >= 0 {
		return index, nil
	}
	return 0, fmt.Errorf("connect export %q to /dev/nbd: %w: no device index in reply", e.name, ErrProtocol)
}

// Disconnect disconnects /dev/nbd<index>; its connection then ends.
func (k *Kernel) Disconnect(index int) error {
	ae := netlink.NewAttributeEncoder()
	ae.Uint32(nbdAttrIndex, uint32(index))
	attrs, err := ae.Encode()
	if err != nil {
		return err
	}
	_, err = k.nl.Execute(netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(k.family), Flags: netlink.Request | netlink.Acknowledge},
		Data:   append([]byte{nbdCmdDisconnect, nbdGenlVersion, 0, 0}, attrs...),
	})
	if err != nil {
		return fmt.Errorf("disconnect /dev/nbd%d: %w", index, err)
	}
	return nil
}
