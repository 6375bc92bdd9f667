package scsi

// ExecuteOn runs a command addressed to lun of a target whose logical
// units are lus. REPORT LUNS is answered for the whole target from any
// LUN; a LUN without a logical unit answers INQUIRY with peripheral
// qualifier 011b and everything else with LOGICAL UNIT NOT SUPPORTED.
func ExecuteOn(lus map[uint64]*LU, lun uint64, cmd *Command) Response {
	var resp Response
	if len(cmd.CDB) > 0 && cmd.CDB[0] == opReportLUNs {
		luns := make([]uint64, 0, len(lus))
		for l := range lus {
			luns = append(luns, l)
		}
		sortLUNs(luns)
		if err := ReportLUNs(luns, cmd.CDB, &resp); err != nil {
			return failNoLU(&resp, err)
		}
		return resp
	}
	if lu := lus[lun]; lu != nil {
		return lu.Execute(cmd)
	}
	if len(cmd.CDB) >= 6 && cmd.CDB[0] == opInquiry && cmd.CDB[1]&1 == 0 {
		d := make([]byte, 36)
		d[0] = 0x7f
		d[2], d[3], d[4] = 0x06, 0x02, 31
		copy(d[8:], vendorID)
		copy(d[16:], productID)
		copy(d[32:], productRev)
		resp.Data = truncate(d, uint32(get16(cmd.CDB[3:])))
		return resp
	}
	return failNoLU(&resp, checkCondition(KeyIllegalRequest, ascLUNotSupported))
}

func failNoLU(resp *Response, err error) Response {
	se, ok := err.(*senseError)
	if !ok {
		se = errInvalidOpcode
	}
	resp.Status = StatusCheckCondition
	resp.Sense = se.bytes(false)
	resp.Data = nil
	return *resp
}

func sortLUNs(l []uint64) {
	for i := 1; i < len(l); i++ {
		for j := i; j > 0 && l[j] < l[j-1]; j-- {
			l[j], l[j-1] = l[j-1], l[j]
		}
	}
}
