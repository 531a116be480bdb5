package signal

// SuccessNoise reports the kernel events that successful traffic can still
// produce on a loaded machine, which no pattern may take for a failure:
//   - a late pure ACK of a finished connection processed by the listener
//     (a TCP_FLAGS drop at the LISTEN socket and the RST it sends);
//   - a retransmission that is loss recovery, not a timeout: a tail-loss
//     probe or fast retransmit leaves icsk_retransmits at 0, where every
//     retransmission timeout counts at least 1.
//
// Tests that require silence from successful traffic tolerate exactly these.
func SuccessNoise(s Signal) bool {
	switch s.Kind {
	case KindDrop:
		return s.State == StateListen && s.TCPFlags == TCPFlagACK && s.DropReason == "TCP_FLAGS"
	case KindResetSent:
		return s.State == StateListen && s.TCPFlags == TCPFlagACK && s.ResetReason == "TCP_FLAGS"
	case KindRetransmit:
		return s.Retransmits == 0 && s.State != StateSynSent
	}
	return false
}
