package endpoint

import (
	"errors"
	"fmt"
	"strings"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// DefaultOrderingKey is spec.delivery.orderingKey when it is omitted: the
// message's id for message events, the session's for session events, the
// campaign's for campaign events.
const DefaultOrderingKey = `has(data.messageId) ? data.messageId : (has(data.sessionId) ? data.sessionId : data.campaignId)`

// ErrOrderingKeyInvalid is wrapped by every error CompileOrderingKey returns.
var ErrOrderingKeyInvalid = errors.New("invalid ordering key")

// OrderingKey is a compiled spec.delivery.orderingKey: a CEL expression
// over an event (type, data, timestamp, as a filter's) whose result orders
// the deliveries of a PerKey endpoint. Safe for concurrent use.
type OrderingKey struct {
	source string
	prg    cel.Program
	failed prometheus.Counter
}

// Source returns the expression, "" for a nil key.
func (k *OrderingKey) Source() string {
	if k == nil {
		return ""
	}
	return k.source
}

// CompileOrderingKey compiles expr as the ordering key of the endpoint
// namespace/name; "" compiles DefaultOrderingKey. The result must be a
// string, a number, a bool or dyn (checked again per event). The error
// wraps ErrOrderingKeyInvalid and carries the compiler's message.
func CompileOrderingKey(namespace, name, expr string) (*OrderingKey, error) {
	if expr == "" {
		expr = DefaultOrderingKey
	}
	if len(expr) > MaxFilterLength {
		return nil, fmt.Errorf("%w: %d bytes, longer than %d", ErrOrderingKeyInvalid, len(expr), MaxFilterLength)
	}
	ast, iss := filterEnv.Compile(expr)
	if iss.Err() != nil {
		return nil, fmt.Errorf("%w: %s", ErrOrderingKeyInvalid, strings.TrimSpace(iss.Err().Error()))
	}
	switch out := ast.OutputType(); {
	case out.IsExactType(cel.StringType), out.IsExactType(cel.IntType), out.IsExactType(cel.UintType),
		out.IsExactType(cel.DoubleType), out.IsExactType(cel.BoolType), out.IsExactType(cel.DynType):
	default:
		return nil, fmt.Errorf("%w: the expression must evaluate to a string (or a number or bool), not %s", ErrOrderingKeyInvalid, out)
	}
	prg, err := filterEnv.Program(ast, cel.CostLimit(FilterCostLimit), cel.EvalOptions(cel.OptOptimize))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrOrderingKeyInvalid, err)
	}
	return &OrderingKey{source: expr, prg: prg, failed: orderingKeyErrors.WithLabelValues(namespace, name)}, nil
}

// Key returns the ordering key of the event of type typ whose envelope (the
// delivered body) is envelope. An event the expression fails on (a missing
// key, a result of another type) gets the empty key, and the failure is
// counted in wablast_webhook_ordering_key_errors_total; the error says why.
func (k *OrderingKey) Key(typ string, envelope []byte) (string, error) {
	key, err := k.eval(typ, envelope)
	if err != nil {
		k.failed.Inc()
		return "", err
	}
	return key, nil
}

func (k *OrderingKey) eval(typ string, envelope []byte) (string, error) {
	vars, err := newFilterVars(&FilterEvent{Type: typ, Envelope: envelope})
	if err != nil {
		return "", err
	}
	out, _, err := k.prg.Eval(vars)
	if err != nil {
		return "", err
	}
	return keyText(out)
}

// keyText is the text of a key: a string as it is, a number or bool as CEL's string() gives it.
func keyText(v ref.Val) (string, error) {
	switch v.(type) {
	case types.String, types.Int, types.Uint, types.Double, types.Bool:
		s, ok := v.ConvertToType(types.StringType).(types.String)
		if !ok {
			return "", fmt.Errorf("the ordering key %v does not convert to a string", v)
		}
		return string(s), nil
	}
	return "", fmt.Errorf("the ordering key is a %s, not a string, number or bool", v.Type().TypeName())
}

var orderingKeyErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "wablast_webhook_ordering_key_errors_total",
	Help: "Events a PerKey WebhookConfig's spec.delivery.orderingKey failed on (a missing key, a result that is not a string, number or bool): they were ordered under the empty key.",
}, []string{"namespace", "name"})

func init() {
	metrics.Registry.MustRegister(orderingKeyErrors)
}

// ForgetOrderingMetrics deletes the ordering series of a deleted WebhookConfig.
func ForgetOrderingMetrics(namespace, name string) {
	orderingKeyErrors.DeletePartialMatch(prometheus.Labels{"namespace": namespace, "name": name})
}
