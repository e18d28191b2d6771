package store

import (
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"k8s.io/apimachinery/pkg/types"
)

func TestOrderedSubjectsNameTheEndpointAndAShortKeyToken(t *testing.T) {
	for _, key := range []string{"", "m-1", "3EB0C767D26A1D4D6A8F", strings.Repeat("ü.*> ", 100)} {
		token := OrderKeyToken(key)
		if len(token) != 22 || strings.ContainsAny(token, ".*> ") {
			t.Errorf("token of %q: %q, want 22 characters usable in a subject", key, token)
		}
		subj := OrderedSubject("shop", "crm.v2", token)
		ep, got, ok := OrderedKeyOfSubject(subj)
		if !ok || ep != (types.NamespacedName{Namespace: "shop", Name: "crm.v2"}) || got != token {
			t.Errorf("%s parsed as %v %q %v", subj, ep, got, ok)
		}
	}
	if OrderKeyToken("a") == OrderKeyToken("b") {
		t.Error("two keys share a token")
	}
	for _, subj := range []string{"wh.dl.shop.crm", "wh.ok.shop.crm", "wh.os.shop.crm.tok"} {
		if _, _, ok := OrderedKeyOfSubject(subj); ok {
			t.Errorf("%s parsed as a key queue", subj)
		}
	}
}

func TestAHeadStateIsOneRolledUpMessage(t *testing.T) {
	due := time.Date(2026, 12, 8, 10, 0, 0, 123456789, time.UTC)
	msg := HeadStateMsg("shop", "crm", "tok", HeadState{Seq: 42, Attempts: 3, Due: due})
	if msg.Subject != "wh.os.shop.crm.tok" || msg.Header.Get(jetstream.MsgRollup) != jetstream.MsgRollupSubject {
		t.Errorf("subject %s, rollup %q", msg.Subject, msg.Header.Get(jetstream.MsgRollup))
	}
	st, err := ParseHeadState(msg.Data)
	if err != nil || st.Seq != 42 || st.Attempts != 3 || !st.Due.Equal(due) {
		t.Errorf("parsed %+v, %v", st, err)
	}
	for _, bad := range []string{"", "1 2", "a b c", "1 2 3 4"} {
		if _, err := ParseHeadState([]byte(bad)); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}
