package emulator

import (
	"net/http"
	"net/url"
	"strings"
)

// handler routes DPS calls (/{scope}/registrations/…) and hub calls
// (/devices/…) by path segments; ids are percent-decoded per segment, so
// clients that encode them (the C SDK) and clients that do not both work.
func (e *Emulator) handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw := strings.Split(strings.Trim(r.URL.EscapedPath(), "/"), "/")
		seg := make([]string, len(raw))
		for i, s := range raw {
			d, err := url.PathUnescape(s)
			if err != nil {
				writeDPSError(w, http.StatusBadRequest, 400001, "bad path")
				return
			}
			seg[i] = d
		}
		switch {
		case len(seg) >= 2 && seg[0] == "devices" && seg[1] != "":
			e.hub(w, r, seg)
		case len(seg) == 4 && seg[1] == "registrations" && seg[3] == "register" && r.Method == http.MethodPut:
			e.register(w, r, seg[0], seg[2])
		case len(seg) == 5 && seg[1] == "registrations" && seg[3] == "operations" && r.Method == http.MethodGet:
			e.poll(w, r, seg[0], seg[2], seg[4])
		default:
			writeDPSError(w, http.StatusNotFound, 404001, "no such route")
			e.record("", "", r, http.StatusNotFound, "no route")
		}
	})
}
