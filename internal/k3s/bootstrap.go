package k3s

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// File is one entry of the bootstrap data: a file's content and the time it
// was last modified. It has no JSON tags, exactly like K3s's bootstrap.File,
// so it encodes as {"Timestamp":"<RFC3339Nano>","Content":"<base64>"}
// (k3s-ca-rotation.md §3 "Plaintext").
type File struct {
	Timestamp time.Time
	Content   []byte
}

// BootstrapData is the decrypted datastore value and the body of
// /v1-k3s/server-bootstrap: bootstrap key (e.g. "ServerCA") to File.
type BootstrapData map[string]File

// BootstrapFile describes one key of the bootstrap data
// (k3s-ca-rotation.md §4, ControlRuntimeBootstrap).
type BootstrapFile struct {
	// Key is the JSON key, the Go field name in K3s ("ServerCA").
	Key string
	// Path is the file's path relative to the server dir SD
	// ("tls/server-ca.crt").
	Path string
	// Rotate is true for fields tagged rotate:"true": rotate-ca replaces them.
	Rotate bool
	// Optional marks keys present only with --secrets-encryption; when their
	// file is absent they are skipped.
	Optional bool
}

// Bootstrap keys in the order of K3s's ControlRuntimeBootstrap struct. The
// rotate-ca handler validates and logs in this order.
const (
	KeyETCDServerCA       = "ETCDServerCA"
	KeyETCDServerCAKey    = "ETCDServerCAKey"
	KeyETCDPeerCA         = "ETCDPeerCA"
	KeyETCDPeerCAKey      = "ETCDPeerCAKey"
	KeyServerCA           = "ServerCA"
	KeyServerCAKey        = "ServerCAKey"
	KeyClientCA           = "ClientCA"
	KeyClientCAKey        = "ClientCAKey"
	KeyServiceKey         = "ServiceKey"
	KeyPasswdFile         = "PasswdFile"
	KeyRequestHeaderCA    = "RequestHeaderCA"
	KeyRequestHeaderCAKey = "RequestHeaderCAKey"
	KeyIPSECKey           = "IPSECKey"
	KeyEncryptionConfig   = "EncryptionConfig"
	KeyEncryptionHash     = "EncryptionHash"
)

// Paths relative to the server dir SD of the bootstrap files
// (k3s-ca-rotation.md §4; deps.CreateRuntimeCertFiles).
const (
	PathServerCA           = "tls/server-ca.crt"
	PathServerCAKey        = "tls/server-ca.key"
	PathClientCA           = "tls/client-ca.crt"
	PathClientCAKey        = "tls/client-ca.key"
	PathRequestHeaderCA    = "tls/request-header-ca.crt"
	PathRequestHeaderCAKey = "tls/request-header-ca.key"
	PathETCDServerCA       = "tls/etcd/server-ca.crt"
	PathETCDServerCAKey    = "tls/etcd/server-ca.key"
	PathETCDPeerCA         = "tls/etcd/peer-ca.crt"
	PathETCDPeerCAKey      = "tls/etcd/peer-ca.key"
	PathServiceKey         = "tls/service.key"
	PathPasswd             = "cred/passwd"
	PathIPSECKey           = "cred/ipsec.psk"
	PathEncryptionConfig   = "cred/encryption-config.json"
	PathEncryptionHash     = "cred/encryption-state.json"
)

// BootstrapFiles lists the bootstrap keys in K3s's struct order with their
// paths relative to SD (k3s-ca-rotation.md §4 table).
var BootstrapFiles = []BootstrapFile{
	{Key: KeyETCDServerCA, Path: PathETCDServerCA, Rotate: true},
	{Key: KeyETCDServerCAKey, Path: PathETCDServerCAKey, Rotate: true},
	{Key: KeyETCDPeerCA, Path: PathETCDPeerCA, Rotate: true},
	{Key: KeyETCDPeerCAKey, Path: PathETCDPeerCAKey, Rotate: true},
	{Key: KeyServerCA, Path: PathServerCA, Rotate: true},
	{Key: KeyServerCAKey, Path: PathServerCAKey, Rotate: true},
	{Key: KeyClientCA, Path: PathClientCA, Rotate: true},
	{Key: KeyClientCAKey, Path: PathClientCAKey, Rotate: true},
	{Key: KeyServiceKey, Path: PathServiceKey, Rotate: true},
	{Key: KeyPasswdFile, Path: PathPasswd},
	{Key: KeyRequestHeaderCA, Path: PathRequestHeaderCA, Rotate: true},
	{Key: KeyRequestHeaderCAKey, Path: PathRequestHeaderCAKey, Rotate: true},
	{Key: KeyIPSECKey, Path: PathIPSECKey},
	{Key: KeyEncryptionConfig, Path: PathEncryptionConfig, Optional: true},
	{Key: KeyEncryptionHash, Path: PathEncryptionHash, Optional: true},
}

// BootstrapFileByKey returns the BootstrapFile for a key.
func BootstrapFileByKey(key string) (BootstrapFile, bool) {
	for _, f := range BootstrapFiles {
		if f.Key == key {
			return f, true
		}
	}
	return BootstrapFile{}, false
}

// StorageKey is the datastore key of the bootstrap data for a passphrase
// (the normalized token): "/bootstrap/" + the first 12 hex chars of
// sha256(passphrase) (k3s-ca-rotation.md §3 "Key"; k3s-vectors.md).
func StorageKey(passphrase string) string {
	sum := sha256.Sum256([]byte(passphrase))
	return "/bootstrap/" + hex.EncodeToString(sum[:])[:12]
}

// Encrypt seals plaintext as K3s stores bootstrap data: a random 8-byte salt
// as 16 hex chars, PBKDF2-HMAC-SHA1 over those hex chars (4096 rounds, 32
// bytes), AES-256-GCM with a random 12-byte nonce and no additional data,
// stored as "<hexsalt>:<base64(nonce|ciphertext|tag)>"
// (k3s-ca-rotation.md §3 "Cipher").
func Encrypt(passphrase string, plaintext []byte) (string, error) {
	salt := make([]byte, 8)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("encrypt bootstrap data: %w", err)
	}
	nonce := make([]byte, 12)
	if _, err := rand.Read(nonce); err != nil {
		return "", fmt.Errorf("encrypt bootstrap data: %w", err)
	}
	return encryptWith(passphrase, plaintext, salt, nonce)
}

// encryptWith is Encrypt with a fixed salt and nonce, for the k3s-vectors.md
// test vector.
func encryptWith(passphrase string, plaintext, salt, nonce []byte) (string, error) {
	hexSalt := hex.EncodeToString(salt)
	gcm, err := bootstrapGCM(passphrase, hexSalt)
	if err != nil {
		return "", fmt.Errorf("encrypt bootstrap data: %w", err)
	}
	if len(nonce) != gcm.NonceSize() {
		return "", fmt.Errorf("encrypt bootstrap data: nonce must be %d bytes", gcm.NonceSize())
	}
	sealed := gcm.Seal(append([]byte(nil), nonce...), nonce, plaintext, nil)
	return hexSalt + ":" + base64.StdEncoding.EncodeToString(sealed), nil
}

// Decrypt opens a value written by Encrypt (or by K3s). A wrong passphrase
// gives an error that says so without revealing it.
func Decrypt(passphrase, stored string) ([]byte, error) {
	salt, b64, ok := strings.Cut(stored, ":")
	if !ok {
		return nil, errors.New("decrypt bootstrap data: invalid cipher text, not : delimited")
	}
	gcm, err := bootstrapGCM(passphrase, salt)
	if err != nil {
		return nil, fmt.Errorf("decrypt bootstrap data: %w", err)
	}
	data, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, fmt.Errorf("decrypt bootstrap data: bad base64: %w", err)
	}
	if len(data) < gcm.NonceSize()+gcm.Overhead() {
		return nil, errors.New("decrypt bootstrap data: value too short")
	}
	plain, err := gcm.Open(nil, data[:gcm.NonceSize()], data[gcm.NonceSize():], nil)
	if err != nil {
		return nil, fmt.Errorf("decrypt bootstrap data: authentication failed (wrong token for this datastore key?): %w", err)
	}
	return plain, nil
}

func bootstrapGCM(passphrase, hexSalt string) (cipher.AEAD, error) {
	key, err := pbkdf2.Key(sha1.New, passphrase, []byte(hexSalt), 4096, 32)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// MarshalBootstrap encodes bootstrap data exactly as K3s's
// json.NewEncoder(w).Encode(map[string]File): compact JSON, keys sorted,
// Timestamp before Content, followed by one newline. The newline is part of
// the stored plaintext: the golden plaintext lengths (8756 and 25338 bytes,
// golden bootstrap-key.txt) are the compact JSON plus one byte.
func MarshalBootstrap(d BootstrapData) ([]byte, error) {
	if d == nil {
		d = BootstrapData{}
	}
	b, err := json.Marshal(map[string]File(d))
	if err != nil {
		return nil, fmt.Errorf("marshal bootstrap data: %w", err)
	}
	return append(b, '\n'), nil
}

// UnmarshalBootstrap decodes bootstrap JSON. The legacy format
// {"Key":"<base64>"} (no timestamps) is accepted too, with zero Timestamps
// (k3s-ca-rotation.md §3 "The legacy format").
func UnmarshalBootstrap(b []byte) (BootstrapData, error) {
	d := BootstrapData{}
	if err := json.Unmarshal(b, (*map[string]File)(&d)); err == nil {
		return d, nil
	}
	var legacy map[string][]byte
	if err := json.Unmarshal(b, &legacy); err != nil {
		return nil, fmt.Errorf("unmarshal bootstrap data: %w", err)
	}
	for k, v := range legacy {
		d[k] = File{Content: v}
	}
	return d, nil
}

// Files returns the data as a map from path relative to SD to content, for
// keys K3s knows; unknown keys are left out.
func (d BootstrapData) Files() map[string][]byte {
	out := map[string][]byte{}
	for _, f := range BootstrapFiles {
		if e, ok := d[f.Key]; ok {
			out[f.Path] = e.Content
		}
	}
	return out
}

// ReadBootstrapFromDir builds bootstrap data from the files under serverDir
// (SD, or a rotate-ca --path dir) as K3s's bootstrap.ReadFromDisk does:
// content and mtime of every known file; missing files are skipped
// (k3s-ca-rotation.md §3, §5 "timestamps = the staged files' mtimes").
func ReadBootstrapFromDir(serverDir string) (BootstrapData, error) {
	d := BootstrapData{}
	for _, f := range BootstrapFiles {
		p := filepath.Join(serverDir, filepath.FromSlash(f.Path))
		info, err := os.Stat(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read bootstrap file %s: %w", p, err)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("read bootstrap file %s: %w", p, err)
		}
		d[f.Key] = File{Timestamp: info.ModTime(), Content: data}
	}
	return d, nil
}

// ReadStagedBootstrap reads a rotate-ca --path dir as the `k3s certificate
// rotate-ca` CLI does: the rotatable files with their mtimes, and PasswdFile
// and IPSECKey as empty files (the CLI points them at /dev/null), which the
// handler then replaces by the current data (k3s-ca-rotation.md §5 "CLI
// flow").
func ReadStagedBootstrap(pathDir string) (BootstrapData, error) {
	d, err := ReadBootstrapFromDir(pathDir)
	if err != nil {
		return nil, err
	}
	ts := time.Now()
	if info, err := os.Stat(os.DevNull); err == nil {
		ts = info.ModTime()
	}
	for _, f := range BootstrapFiles {
		if f.Rotate || f.Optional {
			continue
		}
		d[f.Key] = File{Timestamp: ts, Content: []byte{}}
	}
	return d, nil
}

// WriteBootstrapToDir writes every known entry under serverDir as K3s's
// WriteToDiskFromStorage does: missing directories 0700, new files 0600 (an
// existing file keeps its mode, as with os.WriteFile in K3s), then atime and
// mtime set to the entry's Timestamp (k3s-ca-rotation.md §2 "Writing").
// Unknown keys are skipped.
func WriteBootstrapToDir(serverDir string, d BootstrapData) error {
	for _, f := range BootstrapFiles {
		e, ok := d[f.Key]
		if !ok {
			continue
		}
		p := filepath.Join(serverDir, filepath.FromSlash(f.Path))
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return fmt.Errorf("write bootstrap data: mkdir %s: %w", filepath.Dir(p), err)
		}
		if err := os.WriteFile(p, e.Content, 0o600); err != nil {
			return fmt.Errorf("write bootstrap data: %w", err)
		}
		if err := os.Chtimes(p, e.Timestamp, e.Timestamp); err != nil {
			return fmt.Errorf("write bootstrap data: set mtime of %s: %w", p, err)
		}
	}
	return nil
}
