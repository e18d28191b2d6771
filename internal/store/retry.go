package store

import (
	"encoding/binary"
	"fmt"

	"k8s.io/apimachinery/pkg/types"
)

// EncodeRetry is a retry queue entry's data: the endpoint, then the
// Delivery as a batch of one (EncodeBatch).
func EncodeRetry(ns, name string, uid types.UID, d *Delivery) []byte {
	b := make([]byte, 0, 3*binary.MaxVarintLen32+len(ns)+len(name)+len(uid))
	for _, f := range [...]string{ns, name, string(uid)} {
		b = binary.AppendUvarint(b, uint64(len(f)))
		b = append(b, f...)
	}
	return append(b, EncodeBatch([]Delivery{*d})...)
}

// DecodeRetry decodes what EncodeRetry encoded.
func DecodeRetry(data []byte) (ns, name string, uid types.UID, d Delivery, err error) {
	var fs [3]string
	for i := range fs {
		l, n := binary.Uvarint(data)
		if n <= 0 || l > uint64(len(data)-n) {
			return "", "", "", Delivery{}, fmt.Errorf("%w: truncated retry", ErrBadBatch)
		}
		fs[i] = string(data[n : n+int(l)])
		data = data[n+int(l):]
	}
	ds, err := DecodeBatch(data, 1)
	if err != nil {
		return "", "", "", Delivery{}, err
	}
	return fs[0], fs[1], types.UID(fs[2]), ds[0], nil
}
