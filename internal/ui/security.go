package ui

import (
	"crypto/subtle"
	"net"
	"net/http"
	"strings"
)

// csrfHeader carries the page's CSRF token on every change.
const csrfHeader = "X-CSRF-Token"

// contentSecurityPolicy allows the page's own files only: no inline script,
// no other origin, no framing.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"

// guard wraps next with the checks every request passes, in this order:
//
//  1. the Host header names a loopback host (127.0.0.1, localhost, ::1), so
//     a web site whose name resolves to 127.0.0.1 (DNS rebinding) is refused;
//  2. the access token: in the "token" query parameter of a GET, which sets
//     the cookie and redirects to the same address without it, or in the
//     cookie; a wrong or missing one is refused with 403;
//  3. for every method but GET and HEAD, the CSRF token in X-CSRF-Token, an
//     Origin (when sent) of this server, and no Sec-Fetch-Site other than
//     same-origin.
//
// Every answer says not to cache it, not to send a Referer (the first
// address holds the token), and not to be framed.
func (s *Server) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-store")

		if !loopbackHost(r.Host) {
			s.refuse(w, r, "this server answers only for 127.0.0.1 or localhost")
			return
		}
		if q := r.URL.Query(); q.Has("token") {
			if r.Method != http.MethodGet || !s.validToken(q.Get("token")) {
				s.refuse(w, r, "the access token is not valid: open the address kubectl webhook ui printed")
				return
			}
			http.SetCookie(w, &http.Cookie{
				Name: s.cookieName, Value: s.token, Path: "/",
				HttpOnly: true, SameSite: http.SameSiteStrictMode,
			})
			// The same page without the token, so it is not kept in the
			// address bar or the history.
			q.Del("token")
			target := r.URL.Path
			if len(q) > 0 {
				target += "?" + q.Encode()
			}
			http.Redirect(w, r, target, http.StatusSeeOther)
			return
		}
		if c, err := r.Cookie(s.cookieName); err != nil || !s.validToken(c.Value) {
			s.refuse(w, r, "no access token: open the address kubectl webhook ui printed")
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			if msg := s.checkChange(r); msg != "" {
				s.refuse(w, r, msg)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// checkChange returns why the change r is refused as a possible cross-site
// request, or "" when it passes.
func (s *Server) checkChange(r *http.Request) string {
	if origin := r.Header.Get("Origin"); origin != "" && origin != "http://"+r.Host {
		return "cross-origin request refused (Origin " + origin + ")"
	}
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" {
		return "cross-site request refused (Sec-Fetch-Site " + site + ")"
	}
	got := r.Header.Get(csrfHeader)
	if got == "" || subtle.ConstantTimeCompare([]byte(got), []byte(s.csrf)) != 1 {
		return "missing or wrong CSRF token: reload the page"
	}
	return ""
}

// validToken compares t with the access token in constant time.
func (s *Server) validToken(t string) bool {
	return subtle.ConstantTimeCompare([]byte(t), []byte(s.token)) == 1
}

// refuse answers 403 with msg, as JSON to the page's API calls and as text
// otherwise.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, msg string) {
	if strings.HasPrefix(r.URL.Path, "/api/") {
		writeJSON(w, http.StatusForbidden, errorBody{Message: msg})
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusForbidden)
	_, _ = w.Write([]byte("403 Forbidden: " + msg + "\n"))
}

// loopbackHost reports whether the Host header hostPort names a loopback
// host: localhost or a loopback IP address, with or without a port.
func loopbackHost(hostPort string) bool {
	host := hostPort
	if h, _, err := net.SplitHostPort(hostPort); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
