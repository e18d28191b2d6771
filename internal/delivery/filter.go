package delivery

import "github.com/wablast/webhook-operator/internal/endpoint"

// filterEvent is the event as spec.filter sees it (endpoint.Matching).
func (e *Event) filterEvent() endpoint.FilterEvent {
	return endpoint.FilterEvent{Type: e.Type, Timestamp: e.Timestamp, Data: e.Data}
}
