package broker

import "testing"

// TestSocketGroup: a numeric socket_group is a 32-bit gid; anything else
// is looked up as a group name.
func TestSocketGroup(t *testing.T) {
	for _, tc := range []struct {
		g       string
		want    int
		wantErr bool
	}{
		{"", -1, false},
		{"0", 0, false},
		{"1234", 1234, false},
		// chown's gid_t wrapped these to 0, root's group.
		{"+4294967296", 0, true},
		{"4294967296", 0, true},
	} {
		n, err := socketGroup(tc.g)
		if (err != nil) != tc.wantErr || err == nil && n != tc.want {
			t.Errorf("socketGroup(%q) = %d, %v; want %d (error: %v)", tc.g, n, err, tc.want, tc.wantErr)
		}
	}
}
