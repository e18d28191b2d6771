//go:build race

package main

// raceEnabled: the race detector makes sync.Pool drop items at random, so
// code that reuses pooled values (regexp's matchers) allocates now and then.
const raceEnabled = true
