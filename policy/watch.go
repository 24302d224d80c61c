package policy

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
)

// watchDebounce is how long Watch waits after the last change before it
// reloads, so that an editor's or a deployment's burst of writes (temp
// file, rename, chmod) leads to one reload of the complete set of files.
const watchDebounce = 200 * time.Millisecond

// Watch reloads the policy when a file in Dir changes, debounced, until ctx
// is done (then it returns nil). A rejected policy is logged by Reload and
// the old one kept; Watch goes on watching. It returns an error when Dir is
// not set (the embedded policy never changes) or cannot be watched.
func (e *Engine) Watch(ctx context.Context) error {
	if e.dir == "" {
		return errors.New("watch policy: no policy dir (the embedded default policy does not change)")
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch policy dir %s: %w", e.dir, err)
	}
	defer w.Close()
	if err := w.Add(e.dir); err != nil {
		return fmt.Errorf("watch policy dir %s: %w", e.dir, err)
	}
	// A change between New and w.Add would otherwise go unnoticed.
	_ = e.Reload(ctx)

	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return errors.New("watch policy: watcher closed")
			}
			if relevant(ev.Name) {
				timer.Reset(watchDebounce)
			}
		case err, ok := <-w.Errors:
			if !ok {
				return errors.New("watch policy: watcher closed")
			}
			e.log.Warn("policy dir watch error; reloading to catch up", "dir", e.dir, "err", err)
			timer.Reset(watchDebounce)
		case <-timer.C:
			_ = e.Reload(ctx) // errors are logged by Reload
		}
	}
}

// relevant reports whether a change to the file name can change the policy.
func relevant(name string) bool {
	base := filepath.Base(name)
	if strings.HasPrefix(base, ".") {
		return false
	}
	return strings.HasSuffix(base, ".rego") || slices.Contains(dataFiles, base)
}
