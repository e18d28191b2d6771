package signing_test

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/wablast/webhook-operator/internal/signing"
)

func ExampleSign() {
	keys, err := signing.ParseSecrets("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n")
	if err != nil {
		panic(err)
	}
	ts := time.Unix(1614265330, 0)
	fmt.Println(signing.Sign(keys, "msg_p5jXN8AQM9LWM0D4loKWxJek", ts, []byte(`{"test": 2432232314}`)))
	// Output: v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=
}

func ExampleVerifier_Verify() {
	keys, err := signing.ParseSecrets("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	if err != nil {
		panic(err)
	}
	sent := time.Unix(1614265330, 0)
	body := []byte(`{"test": 2432232314}`)

	h := http.Header{}
	signing.SetHeaders(h, keys, "msg_p5jXN8AQM9LWM0D4loKWxJek", sent, body)

	v := &signing.Verifier{
		Keys: keys,
		Now:  func() time.Time { return sent.Add(30 * time.Second) },
	}
	fmt.Println(v.Verify(h, body))

	err = v.Verify(h, []byte(`{"test": 0}`))
	fmt.Println(errors.Is(err, signing.ErrNoMatchingSignature))
	// Output:
	// <nil>
	// true
}
