package sinkhole

import (
	"errors"
	"fmt"
)

// Errors of this package.
var (
	// ErrUnknownAction is returned by ParseAction for a name that is not an
	// action.
	ErrUnknownAction = errors.New("sinkhole: unknown action")
)

var actionNames = [...]string{
	ActionNone:     "",
	ActionSinkhole: "sinkhole",
	ActionNXDomain: "nxdomain",
	ActionNoData:   "nodata",
	ActionRefuse:   "refuse",
	ActionDrop:     "drop",
	ActionLog:      "log",
}

// String returns the action's name as written in directives, config and
// hit records ("sinkhole", "nxdomain", ...); ActionNone is "".
func (a Action) String() string {
	if int(a) < len(actionNames) {
		return actionNames[a]
	}
	return fmt.Sprintf("action(%d)", uint8(a))
}

// ParseAction returns the action named s (sinkhole, nxdomain, nodata,
// refuse, drop, log). Any other string, the empty one included, is an
// error wrapping ErrUnknownAction.
func ParseAction(s string) (Action, error) {
	for a, name := range actionNames {
		if name != "" && name == s {
			return Action(a), nil
		}
	}
	return ActionNone, fmt.Errorf("%w %q", ErrUnknownAction, s)
}

var triggerNames = [...]string{
	TriggerNone:   "",
	TriggerQName:  "qname",
	TriggerCNAME:  "cname",
	TriggerIP:     "ip",
	TriggerClient: "client",
}

// String returns the trigger's name as in hit records ("qname", "cname",
// "ip", "client"); TriggerNone is "".
func (t Trigger) String() string {
	if int(t) < len(triggerNames) {
		return triggerNames[t]
	}
	return fmt.Sprintf("trigger(%d)", uint8(t))
}
