package endpoint

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/checker"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/ext"
	"github.com/google/cel-go/interpreter"
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// The bounds of a filter (spec.filter), documented in docs/api.md.
const (
	// MaxFilterLength is the longest filter expression, in bytes; the CRD
	// schema refuses longer ones.
	MaxFilterLength = 4096
	// FilterCostLimit bounds a filter's cost: its estimated worst case when
	// it is compiled (for event data up to FilterDataSizeEstimate bytes),
	// and, on an event with more data than that, its actual cost, where
	// going over stops the evaluation as an error (not matched). One unit
	// is roughly one simple operation; a comparison of two fields costs a few.
	FilterCostLimit = 1_000_000
	// FilterDataSizeEstimate is the size the cost estimate assumes for the
	// event data and every string, list and map in it: the ingestion API's
	// default limit of an event (--max-event-bytes).
	FilterDataSizeEstimate = 256 * 1024
)

// Filter is a compiled spec.filter: a CEL expression over an event's type,
// data and timestamp that must be true for the event to be delivered to the
// endpoint. It is compiled and type-checked once per generation of the
// resource (CompileFilter) and is safe for concurrent use.
type Filter struct {
	source string
	// prg enforces FilterCostLimit as it evaluates; bounded evaluates
	// without tracking the cost, for events whose data is within the sizes
	// the compile-time estimate assumed, which then bounds the cost already.
	prg, bounded cel.Program
	// The endpoint's series of the filter metrics, resolved once.
	matched, notMatched, failed prometheus.Counter
}

// Source returns the expression the filter was compiled from, "" for a nil filter.
func (f *Filter) Source() string {
	if f == nil {
		return ""
	}
	return f.source
}

// filterEnv is the environment every filter is compiled in: the three
// variables, the standard library, and the string extensions (lowerAscii,
// split, replace...).
var filterEnv = func() *cel.Env {
	env, err := cel.NewEnv(
		cel.Variable("type", cel.StringType),
		cel.Variable("data", cel.MapType(cel.StringType, cel.DynType)),
		cel.Variable("timestamp", cel.TimestampType),
		ext.Strings(),
		cel.CrossTypeNumericComparisons(true),
	)
	if err != nil {
		panic(fmt.Sprintf("building the filter CEL environment: %v", err))
	}
	return env
}()

// ErrFilterInvalid is wrapped by every error CompileFilter returns: a
// syntax or type error, a result that is not a bool, or a cost over the limit.
var ErrFilterInvalid = errors.New("invalid filter")

// CompileFilter compiles and type-checks expr as the filter of the
// endpoint namespace/name (the names label its metrics). The error, which
// wraps ErrFilterInvalid, carries the compiler's message for the user.
func CompileFilter(namespace, name, expr string) (*Filter, error) {
	if len(expr) > MaxFilterLength {
		return nil, fmt.Errorf("%w: %d bytes, longer than %d", ErrFilterInvalid, len(expr), MaxFilterLength)
	}
	ast, iss := filterEnv.Compile(expr)
	if iss.Err() != nil {
		return nil, fmt.Errorf("%w: %s", ErrFilterInvalid, strings.TrimSpace(iss.Err().Error()))
	}
	if !ast.OutputType().IsExactType(cel.BoolType) {
		return nil, fmt.Errorf("%w: the expression must evaluate to a bool, not %s (compare it, for example data.flag == true)",
			ErrFilterInvalid, ast.OutputType())
	}
	est, err := filterEnv.EstimateCost(ast, filterSizes{})
	if err != nil {
		return nil, fmt.Errorf("%w: estimating its cost: %w", ErrFilterInvalid, err)
	}
	if est.Max > FilterCostLimit {
		return nil, fmt.Errorf("%w: its estimated worst-case cost, %s, is over the limit of %s (for event data up to %d KiB); "+
			"look fields up directly (has(data.x) && data.x == ...) rather than scanning lists, maps or long strings",
			ErrFilterInvalid, costText(est.Max), costText(FilterCostLimit), FilterDataSizeEstimate/1024)
	}
	prg, err := filterEnv.Program(ast, cel.CostLimit(FilterCostLimit), cel.EvalOptions(cel.OptOptimize))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrFilterInvalid, err)
	}
	bounded, err := filterEnv.Program(ast, cel.EvalOptions(cel.OptOptimize))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrFilterInvalid, err)
	}
	return &Filter{
		source:     expr,
		prg:        prg,
		bounded:    bounded,
		matched:    filterEvaluations.WithLabelValues(namespace, name, "matched"),
		notMatched: filterEvaluations.WithLabelValues(namespace, name, "not_matched"),
		failed:     filterErrors.WithLabelValues(namespace, name),
	}, nil
}

func costText(c uint64) string {
	if c == ^uint64(0) {
		return "unbounded"
	}
	return strconv.FormatUint(c, 10)
}

// filterSizes bounds, for the cost estimate, the sizes CEL cannot know:
// those of the event data and of everything in it.
type filterSizes struct{}

// A string of the data has at most as many characters as the data has
// bytes; a list or a map (or a value of unknown type) at most half as many
// elements, each taking at least two bytes ("1,").
func (filterSizes) EstimateSize(n checker.AstNode) *checker.SizeEstimate {
	if p := n.Path(); len(p) == 0 || (p[0] != "data" && p[0] != "type") {
		return nil
	}
	if n.Type().IsExactType(cel.StringType) {
		return &checker.SizeEstimate{Min: 0, Max: FilterDataSizeEstimate}
	}
	return &checker.SizeEstimate{Min: 0, Max: FilterDataSizeEstimate / 2}
}

func (filterSizes) EstimateCallCost(string, string, *checker.AstNode, []checker.AstNode) *checker.CallEstimate {
	return nil
}

// FilterEvent is the event a filter is evaluated against: its type and
// timestamp, and its data object's JSON in Data, or, where only the
// delivered body is at hand, that envelope ({"type", "timestamp", "data"})
// in Envelope, from which the timestamp and data are read.
type FilterEvent struct {
	Type      string
	Timestamp time.Time
	Data      []byte
	Envelope  []byte
}

// Matching returns the endpoints of subs whose filter is true for ev, in
// order: every endpoint without a filter, and those whose filter evaluates
// to true. An evaluation error (a missing key, a cost over the limit, a
// wrong type at run time) counts as not matched and in the
// wablast_webhook_filter_errors_total metric. It is called where the
// deliveries of an event are decided, once per event.
//
// Without any filter among subs it returns subs itself and reads nothing
// of ev; otherwise the data is parsed once for all of them. Data that does
// not parse (which the ingestion API never accepts) matches no filter.
func Matching(subs []Endpoint, ev FilterEvent) []Endpoint {
	return matching(subs, &ev, true)
}

// CountMatching returns len(Matching(subs, ev)) without counting the
// evaluations in the metrics: for answers about an event whose deliveries
// are decided elsewhere (an event with an id, fanned out from the events
// stream, or a duplicate).
func CountMatching(subs []Endpoint, ev FilterEvent) int {
	return len(matching(subs, &ev, false))
}

func matching(subs []Endpoint, ev *FilterEvent, count bool) []Endpoint {
	first := -1
	for i := range subs {
		if subs[i].Filter != nil {
			first = i
			break
		}
	}
	if first < 0 {
		return subs
	}
	vars, perr := newFilterVars(ev)
	// out stays nil while every endpoint so far is kept: when all are,
	// subs itself is returned, without a copy.
	var out []Endpoint
	for i := first; i < len(subs); i++ {
		f := subs[i].Filter
		keep := f == nil
		switch {
		case keep:
		case perr != nil:
			if count {
				f.failed.Inc()
				f.notMatched.Inc()
			}
		default:
			keep = f.eval(vars, count)
		}
		switch {
		case keep && out != nil:
			out = append(out, subs[i])
		case !keep && out == nil:
			out = make([]Endpoint, i, len(subs)-1)
			copy(out, subs[:i])
		}
	}
	if out == nil {
		return subs
	}
	return out
}

// Matches reports whether f is true for ev; a nil filter matches every event.
func (f *Filter) Matches(ev FilterEvent) bool {
	if f == nil {
		return true
	}
	vars, err := newFilterVars(&ev)
	if err != nil {
		f.failed.Inc()
		f.notMatched.Inc()
		return false
	}
	return f.eval(vars, true)
}

// Evaluate returns the filter's result for ev, or the evaluation error.
// It counts nothing; tests and tools use it to see why an event did not match.
func (f *Filter) Evaluate(ev FilterEvent) (bool, error) {
	vars, err := newFilterVars(&ev)
	if err != nil {
		return false, err
	}
	out, _, err := f.program(vars).Eval(vars)
	if err != nil {
		return false, err
	}
	b, ok := out.(types.Bool)
	if !ok {
		return false, fmt.Errorf("the filter returned %s, not a bool", out.Type())
	}
	return bool(b), nil
}

// eval evaluates f and, with count, counts the result in the metrics.
func (f *Filter) eval(vars *filterVars, count bool) bool {
	out, _, err := f.program(vars).Eval(vars)
	matched := err == nil && out == types.True
	if count {
		switch {
		case err != nil:
			f.failed.Inc()
			f.notMatched.Inc()
		case matched:
			f.matched.Inc()
		default:
			f.notMatched.Inc()
		}
	}
	return matched
}

// filterVars are the variables of one event, converted to CEL values once
// and shared by every filter evaluated against it.
type filterVars struct {
	typ, timestamp ref.Val
	data           any // celData
	// small is true when the data is within FilterDataSizeEstimate bytes.
	small bool
}

// program returns the program to evaluate vars with: the one that tracks
// the cost only when the data is larger than the estimate assumed.
func (f *Filter) program(vars *filterVars) cel.Program {
	if vars.small {
		return f.bounded
	}
	return f.prg
}

var _ interpreter.Activation = (*filterVars)(nil)

func (v *filterVars) ResolveName(name string) (any, bool) {
	switch name {
	case "type":
		return v.typ, true
	case "data":
		return v.data, true
	case "timestamp":
		return v.timestamp, true
	}
	return nil, false
}

func (v *filterVars) Parent() interpreter.Activation { return nil }

// newFilterVars parses ev's data (or envelope) for CEL. JSON numbers
// without a fraction or exponent that fit become CEL ints, the others
// doubles; objects become maps, arrays lists.
func newFilterVars(ev *FilterEvent) (*filterVars, error) {
	ts := ev.Timestamp
	var data map[string]any
	if ev.Data == nil && ev.Envelope != nil {
		var env struct {
			Timestamp string         `json:"timestamp"`
			Data      map[string]any `json:"data"`
		}
		if err := decodeJSON(ev.Envelope, &env); err != nil {
			return nil, fmt.Errorf("reading the event: %w", err)
		}
		t, err := time.Parse(time.RFC3339Nano, env.Timestamp)
		if err != nil {
			return nil, fmt.Errorf("reading the event's timestamp: %w", err)
		}
		ts, data = t, env.Data
	} else if err := decodeJSON(ev.Data, &data); err != nil {
		return nil, fmt.Errorf("reading the event's data: %w", err)
	}
	// The data as CEL values, converted once: every filter reads them
	// without adapting Go values on each access.
	return &filterVars{
		typ:       types.String(ev.Type),
		data:      celData(data),
		timestamp: types.Timestamp{Time: ts.UTC().Truncate(time.Millisecond)},
		small:     len(ev.Data)+len(ev.Envelope) <= FilterDataSizeEstimate,
	}, nil
}

// celData is the data object for CEL: a Go map[string]any (nested
// objects likewise) whose other values are CEL values already. CEL's
// interpreter looks a field up in such a map directly (a string-keyed Go
// map), where a CEL map (celValue) hashes and compares the key as an
// interface value: field reads, most of a filter's work, take about half
// as long. A value that leaves the map whole (data itself, an object in
// it) is adapted to a CEL map when it is used as one.
func celData(m map[string]any) any {
	out := make(map[string]any, len(m))
	for k, e := range m {
		if o, ok := e.(map[string]any); ok {
			out[k] = celData(o)
			continue
		}
		out[k] = celValue(e)
	}
	return out
}

// celValue converts a JSON value decoded with UseNumber into a CEL value:
// objects into maps, arrays into lists, numbers without a fraction or an
// exponent that fit into ints, the other numbers into doubles. A nil map
// (no data) is an empty map.
func celValue(v any) ref.Val {
	switch x := v.(type) {
	case map[string]any:
		m := make(map[ref.Val]ref.Val, len(x))
		for k, e := range x {
			m[types.String(k)] = celValue(e)
		}
		return types.NewRefValMap(types.DefaultTypeAdapter, m)
	case []any:
		l := make([]ref.Val, len(x))
		for i, e := range x {
			l[i] = celValue(e)
		}
		return types.NewRefValList(types.DefaultTypeAdapter, l)
	case string:
		return types.String(x)
	case json.Number:
		if i, err := strconv.ParseInt(string(x), 10, 64); err == nil {
			return types.Int(i)
		}
		f, _ := strconv.ParseFloat(string(x), 64) // valid JSON: out of range is ±Inf
		return types.Double(f)
	case bool:
		return types.Bool(x)
	default: // nil
		return types.NullValue
	}
}

func decodeJSON(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	return dec.Decode(v)
}

// The filter metrics, in controller-runtime's registry (served on the
// manager's metrics address) like the controller's own. Series are labelled
// by namespace and WebhookConfig name, as the delivery metrics.
var (
	filterEvaluations = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wablast_webhook_filter_evaluations_total",
		Help: "Events a WebhookConfig's spec.filter was evaluated against, by result: matched (delivered) or not_matched (not delivered; evaluation errors included).",
	}, []string{"namespace", "name", "result"})
	filterErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wablast_webhook_filter_errors_total",
		Help: "Evaluations of a WebhookConfig's spec.filter that failed (a missing key, a type mismatch, the cost limit): the event counted as not matched and was not delivered to it.",
	}, []string{"namespace", "name"})
)

func init() {
	metrics.Registry.MustRegister(filterEvaluations, filterErrors)
}

// ForgetFilterMetrics deletes the filter series of a deleted WebhookConfig.
func ForgetFilterMetrics(namespace, name string) {
	labels := prometheus.Labels{"namespace": namespace, "name": name}
	filterEvaluations.DeletePartialMatch(labels)
	filterErrors.DeletePartialMatch(labels)
}
