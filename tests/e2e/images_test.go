package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"keyway.dev/tests/harness"
)

// The OCI archives make images writes (scripts/images.sh) are what the
// manifests in deploy/ expect: keyway/NAME:TAG, run as 65532:65532, the
// binary as entrypoint, static, and nothing else in the image but the CA
// bundle and /etc/passwd and /etc/group — no shell. make images runs this
// test after building; elsewhere it skips when the archives are absent.
func TestImages(t *testing.T) {
	harness.FullTier(t)
	root, err := harness.Root()
	if err != nil {
		t.Fatal(err)
	}
	head := ""
	if out, err := exec.Command("git", "-C", root, "rev-parse", "HEAD").Output(); err == nil {
		head = strings.TrimSpace(string(out))
	}
	for _, name := range []string{"keyway-policy", "keyway-secrets", "keyway-proxy", "keywayctl"} {
		t.Run(name, func(t *testing.T) {
			archive := filepath.Join(root, "images", name+".tar")
			if _, err := os.Stat(archive); errors.Is(err, os.ErrNotExist) {
				t.Skipf("%s is absent: make images builds it (and runs this test)", archive)
			}
			img, err := readOCIArchive(archive)
			if err != nil {
				t.Fatalf("%s: %v", archive, err)
			}
			if !strings.HasPrefix(img.ref, "keyway/"+name+":") {
				t.Errorf("%s: image name %q, want keyway/%s:TAG (deploy/kubernetes names keyway/%s)", archive, img.ref, name, name)
			}
			c := img.config.Config
			if c.User != "65532:65532" {
				t.Errorf("%s: user %q, want 65532:65532 (the manifests' runAsUser and runAsGroup)", archive, c.User)
			}
			bin := "/usr/local/bin/" + name
			if !slices.Equal(c.Entrypoint, []string{bin}) || len(c.Cmd) != 0 {
				t.Errorf("%s: entrypoint %q, cmd %q; want [%s] and no cmd (the manifests give args only)", archive, c.Entrypoint, c.Cmd, bin)
			}
			for _, l := range []string{"org.opencontainers.image.version", "org.opencontainers.image.revision", "org.opencontainers.image.source"} {
				if c.Labels[l] == "" {
					t.Errorf("%s: no label %s", archive, l)
				}
			}
			if head != "" && c.Labels["org.opencontainers.image.revision"] != head {
				t.Errorf("%s: revision label %q; the checkout is at %s: run make images again", archive, c.Labels["org.opencontainers.image.revision"], head)
			}
			want := map[string]bool{
				"etc/passwd": true, "etc/group": true, "etc/ssl/certs/ca-certificates.crt": true,
				strings.TrimPrefix(bin, "/"): true,
			}
			for path, mode := range img.files {
				if !want[path] {
					t.Errorf("%s: holds %s (mode %v): an image holds the binary, the CA bundle, /etc/passwd and /etc/group only", archive, path, mode)
				}
				delete(want, path)
			}
			for path := range want {
				t.Errorf("%s: no %s", archive, path)
			}
			if m := img.files[strings.TrimPrefix(bin, "/")]; m&0o022 != 0 || m&0o111 == 0 {
				t.Errorf("%s: %s has mode %v: want executable, writable by its owner (root) only", archive, bin, m)
			}
			// Static: no program interpreter (a FROM scratch image has no
			// dynamic loader), and it runs, naming the commit.
			exe := filepath.Join(t.TempDir(), name)
			if err := os.WriteFile(exe, img.binary[strings.TrimPrefix(bin, "/")], 0o755); err != nil {
				t.Fatal(err)
			}
			f, err := elf.Open(exe)
			if err != nil {
				t.Fatalf("%s: %s: %v", archive, bin, err)
			}
			for _, p := range f.Progs {
				if p.Type == elf.PT_INTERP {
					t.Errorf("%s: %s is dynamically linked: build with CGO_ENABLED=0", archive, bin)
				}
			}
			f.Close()
			out, errOut, code := harness.Run(t, exe, "--version")
			if code != 0 || !strings.HasPrefix(out, name+" "+c.Labels["org.opencontainers.image.version"]+" (commit ") {
				t.Errorf("%s: %s --version: exit %d, %q (stderr %q); want %s %s (commit …)", archive, bin, code, out, errOut, name, c.Labels["org.opencontainers.image.version"])
			}
		})
	}
}

// ociImage is what TestImages reads of an OCI archive.
type ociImage struct {
	ref    string // org.opencontainers.image.ref.name in index.json
	config struct {
		Config struct {
			User       string
			Entrypoint []string
			Cmd        []string
			Labels     map[string]string
		} `json:"config"`
	}
	files  map[string]os.FileMode // regular files and symbolic links of the layers
	binary map[string][]byte      // contents of files under usr/local/bin/
}

// readOCIArchive follows index.json to the one manifest, then to its
// config and layers (tar, plain or gzip), all bounded in size.
func readOCIArchive(path string) (*ociImage, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	blobs := make(map[string][]byte)
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		if h.Size > 256<<20 {
			return nil, fmt.Errorf("%s: %d bytes, more than an image of one binary should hold", h.Name, h.Size)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			return nil, err
		}
		blobs[strings.TrimPrefix(h.Name, "./")] = b
	}
	blob := func(digest string) ([]byte, error) {
		algo, hex, ok := strings.Cut(digest, ":")
		b, found := blobs["blobs/"+algo+"/"+hex]
		if !ok || !found {
			return nil, fmt.Errorf("blob %q: not in the archive", digest)
		}
		return b, nil
	}
	type descriptor struct {
		MediaType   string            `json:"mediaType"`
		Digest      string            `json:"digest"`
		Annotations map[string]string `json:"annotations"`
	}
	var index struct{ Manifests []descriptor }
	if err := json.Unmarshal(blobs["index.json"], &index); err != nil {
		return nil, fmt.Errorf("index.json: %w", err)
	}
	if len(index.Manifests) != 1 {
		return nil, fmt.Errorf("index.json: %d manifests, want 1", len(index.Manifests))
	}
	img := &ociImage{ref: index.Manifests[0].Annotations["org.opencontainers.image.ref.name"], files: make(map[string]os.FileMode), binary: make(map[string][]byte)}
	b, err := blob(index.Manifests[0].Digest)
	if err != nil {
		return nil, err
	}
	var manifest struct {
		Config descriptor
		Layers []descriptor
	}
	if err := json.Unmarshal(b, &manifest); err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	if b, err = blob(manifest.Config.Digest); err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, &img.config); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	for _, l := range manifest.Layers {
		b, err := blob(l.Digest)
		if err != nil {
			return nil, err
		}
		var r io.Reader = bytes.NewReader(b)
		switch l.MediaType {
		case "application/vnd.oci.image.layer.v1.tar":
		case "application/vnd.oci.image.layer.v1.tar+gzip":
			if r, err = gzip.NewReader(r); err != nil {
				return nil, fmt.Errorf("layer %s: %w", l.Digest, err)
			}
		default:
			return nil, fmt.Errorf("layer %s: media type %q, want an OCI tar layer, plain or gzip", l.Digest, l.MediaType)
		}
		lt := tar.NewReader(r)
		for {
			h, err := lt.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("layer %s: %w", l.Digest, err)
			}
			name := strings.TrimPrefix(strings.TrimPrefix(h.Name, "./"), "/")
			if h.Typeflag == tar.TypeDir {
				continue
			}
			img.files[name] = h.FileInfo().Mode()
			if strings.HasPrefix(name, "usr/local/bin/") && h.Typeflag == tar.TypeReg && h.Size <= 256<<20 {
				if img.binary[name], err = io.ReadAll(lt); err != nil {
					return nil, fmt.Errorf("layer %s: %s: %w", l.Digest, name, err)
				}
			}
		}
	}
	return img, nil
}
