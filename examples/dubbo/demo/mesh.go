package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// readyTimeout bounds how long a provider or the mesh may take to start.
const readyTimeout = 30 * time.Second

// startMesh runs `meltemi mesh` on the manifests in dir and returns once its /ready answers 200, with the
// command line it ran. Its xDS and admin servers get free ports rather than the defaults, so a mesh the user
// already runs does not clash with the demo's.
func startMesh(ctx context.Context, meltemi, dir string) (*child, string, error) {
	// A port found free can be taken by someone else before the mesh binds it: then try other ports.
	var lastErr error
	for range 3 {
		xds, err := freePort()
		if err != nil {
			return nil, "", err
		}
		admin, err := freePort()
		if err != nil {
			return nil, "", err
		}
		args := []string{"mesh", "-f", dir, "--xds", xds, "--admin", admin}
		c, err := startChild("meltemi mesh", meltemi, args...)
		if err != nil {
			return nil, "", err
		}
		ready := "http://" + admin + "/ready"
		err = waitFor(ctx, c, "the mesh to answer "+ready, func() bool { return isReady(ready) })
		if err == nil {
			return c, "meltemi " + strings.Join(args, " "), nil
		}
		c.stop(5 * time.Second)
		if !strings.Contains(c.out.String(), "address already in use") {
			return nil, "", err
		}
		lastErr = err
	}
	return nil, "", lastErr
}

// isReady says whether GET url answers 200.
func isReady(url string) bool {
	client := http.Client{Timeout: time.Second}
	resp, err := client.Get(url)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// waitFor polls cond until it holds. It gives up when the child exits first, when ctx ends or after
// readyTimeout.
func waitFor(ctx context.Context, c *child, what string, cond func() bool) error {
	deadline := time.Now().Add(readyTimeout)
	for delay := 10 * time.Millisecond; !cond(); delay = min(2*delay, 200*time.Millisecond) {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %v waiting for %s%s", readyTimeout, what, c.output())
		}
		select {
		case <-ctx.Done():
			return errInterrupted
		case <-c.exited:
			return c.failure()
		case <-time.After(delay):
		}
	}
	return nil
}

// accepting says whether something accepts TCP connections on addr.
func accepting(addr string) bool {
	conn, err := net.DialTimeout("tcp", addr, 500*time.Millisecond)
	if err != nil {
		return false
	}
	conn.Close()
	return true
}

// freePort returns a loopback host:port that nothing listens on right now.
func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// copyManifests copies the YAML files of src into dst, where the demo may edit them.
func copyManifests(src, dst string) error {
	entries, err := os.ReadDir(src)
	if err != nil {
		return fmt.Errorf("manifests: %w (run the demo from examples/dubbo, or pass -manifests DIR)", err)
	}
	for _, e := range entries {
		if e.IsDir() || (filepath.Ext(e.Name()) != ".yaml" && filepath.Ext(e.Name()) != ".yml") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), data, 0o644); err != nil {
			return err
		}
	}
	if _, err := os.Stat(filepath.Join(dst, routerFile)); err != nil {
		return fmt.Errorf("manifests: no %s in %s", routerFile, src)
	}
	return nil
}

// routerFile is the manifest holding the MetaRouter, which the demo rewrites.
const routerFile = "metarouter.yaml"

// canaryRouter is the MetaRouter the demo writes halfway: the same object (same name and namespace, so it
// replaces the first one rather than competing with it) with the one route now split 20/80 by weight.
const canaryRouter = `# Rewritten by the demo: one call in five to v1, four in five to v2.
apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata:
  name: greetservice
  namespace: dubbo-demo
spec:
  hosts:
  - org.apache.dubbo.samples.greetservice
  routes:
  - name: greet
    match:
      attributes:
        interface:
          exact: org.apache.dubbo.samples.GreetService
    route:
    - destination:
        host: org.apache.dubbo.samples.greetservice
        subset: v1
      weight: 20
    - destination:
        host: org.apache.dubbo.samples.greetservice
        subset: v2
      weight: 80
`

// rewriteRouter replaces the MetaRouter in dir with canaryRouter. The new content goes to a temporary file
// first, then takes the old one's name in one rename, so the mesh's file watcher never reads a half-written
// manifest. The temporary name does not end in .yaml, so the watcher does not read it either.
func rewriteRouter(dir string) error {
	tmp := filepath.Join(dir, routerFile+".tmp")
	if err := os.WriteFile(tmp, []byte(canaryRouter), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, routerFile))
}
