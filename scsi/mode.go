package scsi

// Mode pages served by MODE SENSE and changed by MODE SELECT.
const (
	pageCaching = 0x08
	pageControl = 0x0a
	pageInfoExc = 0x1c
	pageAll     = 0x3f
)

// modePage builds one page for page control pc (0 current, 1
// changeable, 2 default).
func (lu *LU) modePage(code byte, pc byte) []byte {
	lu.mu.Lock()
	defer lu.mu.Unlock()
	switch code {
	case pageCaching:
		p := make([]byte, 20)
		p[0], p[1] = pageCaching, 18
		switch {
		case pc == 1:
			p[2] = 0x04
		case pc == 2 || lu.wce:
			p[2] = 0x04
		}
		return p
	case pageControl:
		p := make([]byte, 12)
		p[0], p[1] = pageControl, 10
		switch pc {
		case 1:
			p[2] = 0x04 // D_SENSE
			p[4] = 0x08 // SWP
		case 0:
			if lu.dsense {
				p[2] |= 0x04
			}
			if lu.swp {
				p[4] |= 0x08
			}
		}
		if pc != 1 {
			p[3] = 0x10          // unrestricted reordering
			put16(p[8:], 0xffff) // busy timeout: unlimited
		}
		return p
	case pageInfoExc:
		p := make([]byte, 12)
		p[0], p[1] = pageInfoExc, 10
		return p
	}
	return nil
}

func (lu *LU) modeSense(cmd *Command, cdb []byte, resp *Response) error {
	ten := cdb[0] == opModeSense10
	dbd := cdb[1]&0x08 != 0
	llbaa := ten && cdb[1]&0x10 != 0
	pc, code, sub := cdb[2]>>6, cdb[2]&0x3f, cdb[3]
	if pc == 3 {
		return checkCondition(KeyIllegalRequest, ascSavingParamsNotSupp)
	}
	if sub != 0 && sub != 0xff {
		return invalidCDB(3)
	}
	var pages []byte
	if code == pageAll {
		for _, c := range []byte{pageCaching, pageControl, pageInfoExc} {
			pages = append(pages, lu.modePage(c, pc)...)
		}
	} else {
		pages = lu.modePage(code, pc)
		if pages == nil {
			return invalidCDB(2)
		}
	}
	var bd []byte
	if !dbd {
		bs := lu.be.BlockSize()
		if llbaa {
			bd = make([]byte, 16)
			put64(bd, lu.be.Blocks())
			put32(bd[12:], bs)
		} else {
			bd = make([]byte, 8)
			put32(bd, uint32(min(lu.be.Blocks(), 0xffffffff)))
			if !ten {
				put32(bd, uint32(min(lu.be.Blocks(), 0xffffff)))
			}
			put32(bd[4:], bs&0xffffff)
		}
	}
	devSpecific := byte(0x10) // DPOFUA
	if lu.writeProtected() {
		devSpecific |= 0x80
	}
	var d []byte
	if ten {
		d = make([]byte, 8, 8+len(bd)+len(pages))
		d[3] = devSpecific
		if llbaa {
			d[4] = 1
		}
		put16(d[6:], uint16(len(bd)))
		d = append(append(d, bd...), pages...)
		put16(d, uint16(len(d)-2))
		resp.Data = truncate(d, uint32(get16(cdb[7:])))
		return nil
	}
	d = make([]byte, 4, 4+len(bd)+len(pages))
	d[2] = devSpecific
	d[3] = byte(len(bd))
	d = append(append(d, bd...), pages...)
	d[0] = byte(len(d) - 1)
	resp.Data = truncate(d, uint32(cdb[4]))
	return nil
}

func (lu *LU) modeSelect(cmd *Command, cdb []byte, data []byte) error {
	ten := cdb[0] == opModeSelect10
	if cdb[1]&0x01 != 0 { // SP: saving pages is not supported
		return invalidCDB(1)
	}
	if cdb[1]&0x10 == 0 && len(data) > 0 { // PF=0: vendor-specific format
		return invalidCDB(1)
	}
	var hdr, bdLen int
	switch {
	case len(data) == 0:
		return nil
	case ten && len(data) >= 8:
		hdr, bdLen = 8, int(get16(data[6:]))
	case !ten && len(data) >= 4:
		hdr, bdLen = 4, int(data[3])
	default:
		return errParamLength
	}
	p := hdr + bdLen
	if p > len(data) {
		return errParamLength
	}
	wce, dsense, swp := lu.wce, lu.dsense, lu.swp
	for p < len(data) {
		if p+2 > len(data) {
			return errParamLength
		}
		code, n := data[p]&0x3f, int(data[p+1])
		if data[p]&0x40 != 0 || p+2+n > len(data) {
			return invalidParam(p)
		}
		page := data[p : p+2+n]
		cur := lu.modePage(code, 0)
		mask := lu.modePage(code, 1)
		if cur == nil || len(cur) != len(page) {
			return invalidParam(p)
		}
		for i := 2; i < len(page); i++ {
			if (page[i]^cur[i])&^mask[i] != 0 {
				return invalidParam(p + i)
			}
		}
		switch code {
		case pageCaching:
			wce = page[2]&0x04 != 0
		case pageControl:
			dsense = page[2]&0x04 != 0
			swp = page[4]&0x08 != 0
		}
		p += 2 + n
	}
	lu.mu.Lock()
	changed := wce != lu.wce || dsense != lu.dsense || swp != lu.swp
	lu.wce, lu.dsense, lu.swp = wce, dsense, swp
	if changed {
		lu.addUA(ascModeParamsChanged, cmd.Nexus.ID())
	}
	lu.mu.Unlock()
	return nil
}
