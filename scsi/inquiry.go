package scsi

// Identification strings of the standard INQUIRY data.
const (
	vendorID   = "KEEL    "
	productID  = "keel volume     "
	productRev = "0001"
)

func (lu *LU) inquiry(cmd *Command, cdb []byte, resp *Response) error {
	alloc := uint32(get16(cdb[3:]))
	evpd := cdb[1]&1 != 0
	if cdb[1]&0xfe != 0 {
		return invalidCDB(1)
	}
	if !evpd {
		if cdb[2] != 0 {
			return invalidCDB(2)
		}
		d := make([]byte, 96)
		d[2] = 0x06   // SPC-4
		d[3] = 0x12   // HiSup, response data format 2
		d[4] = 96 - 5 // additional length
		d[7] = 0x02   // CMDQUE
		copy(d[8:], vendorID)
		copy(d[16:], productID)
		copy(d[32:], productRev)
		// Version descriptors: SAM-5, iSCSI, SPC-4, SBC-3.
		for i, v := range []uint16{0x00a0, 0x0960, 0x0460, 0x04c0} {
			put16(d[58+2*i:], v)
		}
		resp.Data = truncate(d, alloc)
		return nil
	}
	var page []byte
	switch cdb[2] {
	case 0x00:
		page = []byte{0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2}
	case 0x80:
		page = []byte(lu.serial)
	case 0x83:
		page = lu.deviceIdentification(cmd.Nexus)
	case 0xb0:
		page = lu.blockLimits()
	case 0xb1:
		page = make([]byte, 0x3c)
		put16(page, 1) // non-rotating medium
		page[3] = 0x05 // nominal form factor: less than 1.8 inch
	case 0xb2:
		page = make([]byte, 4)
		if lu.be.Thin() {
			page[1] = 0xe4 // LBPU, LBPWS, LBPWS10, LBPRZ
			page[2] = 0x02 // thin provisioned
		}
	default:
		return invalidCDB(2)
	}
	d := make([]byte, 4+len(page))
	d[1] = cdb[2]
	put16(d[2:], uint16(len(page)))
	copy(d[4:], page)
	resp.Data = truncate(d, alloc)
	return nil
}

func (lu *LU) deviceIdentification(n Nexus) []byte {
	var d []byte
	// NAA designator of the logical unit (binary, association LU).
	d = append(d, 0x01, 0x03, 0x00, 16)
	d = append(d, lu.naa[:]...)
	// T10 vendor id designator (ASCII).
	t10 := vendorID + lu.serial
	d = append(d, 0x02, 0x01, 0x00, byte(len(t10)))
	d = append(d, t10...)
	// Relative target port (association target port, protocol iSCSI).
	d = append(d, 0x51, 0x94, 0x00, 4, 0, 0, byte(n.RelTargetPort>>8), byte(n.RelTargetPort))
	if n.TargetPort != "" {
		name := []byte(n.TargetPort)
		name = append(name, 0)
		for len(name)%4 != 0 {
			name = append(name, 0)
		}
		// SCSI name string of the target port (UTF-8).
		d = append(d, 0x53, 0x98, 0x00, byte(len(name)))
		d = append(d, name...)
	}
	return d
}

func (lu *LU) blockLimits() []byte {
	p := make([]byte, 0x3c)
	p[1] = maxCompareBlocks
	put16(p[2:], 1)                          // optimal transfer length granularity
	put32(p[4:], maxTransferBlocks)          // maximum transfer length
	put32(p[8:], 128*1024/lu.be.BlockSize()) // optimal transfer length
	if lu.be.Thin() {
		put32(p[16:], maxUnmapBlocks)
		put32(p[20:], maxUnmapDescs)
		put32(p[24:], 4096/lu.be.BlockSize()) // optimal unmap granularity
	}
	return p
}
