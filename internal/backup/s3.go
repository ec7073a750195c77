package backup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"sort"
	"strings"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// S3Config reaches an S3-compatible service. Credentials come from the
// environment only (never flags, which show in ps).
type S3Config struct {
	Endpoint     string // host[:port] or http(s)://host[:port]; default s3.amazonaws.com
	Region       string // "" lets minio-go discover it
	Insecure     bool   // plain HTTP (test servers, a MinIO on loopback)
	AccessKey    string
	SecretKey    string
	SessionToken string
	Transport    http.RoundTripper // tests
}

// S3ConfigFromEnv reads RCSGATE_S3_ENDPOINT, AWS_REGION, AWS_ACCESS_KEY_ID,
// AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN.
func S3ConfigFromEnv() S3Config {
	return S3Config{
		Endpoint:     os.Getenv("RCSGATE_S3_ENDPOINT"),
		Region:       os.Getenv("AWS_REGION"),
		AccessKey:    os.Getenv("AWS_ACCESS_KEY_ID"),
		SecretKey:    os.Getenv("AWS_SECRET_ACCESS_KEY"),
		SessionToken: os.Getenv("AWS_SESSION_TOKEN"),
	}
}

// s3PartSize bounds memory: minio-go buffers one part when the size is
// unknown, and would pick ~537 MiB parts by default. 16 MiB × 10,000
// parts still allows archives up to 156 GiB.
var s3PartSize uint64 = 16 << 20 // a var: tests use minio-go's 5 MiB minimum

// S3 is a bucket prefix holding archives.
type S3 struct {
	client *minio.Client
	bucket string
	prefix string // no leading or trailing slash; may be empty
}

// NewS3 connects (lazily) to bucket; archives go under prefix.
func NewS3(cfg S3Config, bucket, prefix string) (*S3, error) {
	endpoint, secure := cfg.Endpoint, !cfg.Insecure
	if endpoint == "" {
		endpoint = "s3.amazonaws.com"
	}
	if strings.Contains(endpoint, "://") {
		u, err := url.Parse(endpoint)
		if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") || (u.Path != "" && u.Path != "/") {
			return nil, fmt.Errorf("S3 endpoint %q: give host:port or http(s)://host:port", endpoint)
		}
		endpoint, secure = u.Host, u.Scheme == "https" && !cfg.Insecure
	}
	if cfg.AccessKey == "" || cfg.SecretKey == "" {
		return nil, errors.New("S3 credentials missing: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
	}
	c, err := minio.New(endpoint, &minio.Options{
		Creds:     credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, cfg.SessionToken),
		Secure:    secure,
		Region:    cfg.Region,
		Transport: cfg.Transport,
	})
	if err != nil {
		return nil, fmt.Errorf("S3 client: %w", err)
	}
	return &S3{client: c, bucket: bucket, prefix: strings.Trim(prefix, "/")}, nil
}

func (s *S3) key(name string) string {
	if s.prefix == "" {
		return name
	}
	return s.prefix + "/" + name
}

func (s *S3) Where(name string) string {
	return "s3://" + path.Join(s.bucket, s.key(name))
}

// Put streams with unknown size: minio-go makes a multipart upload, which
// becomes visible only when completed and is aborted on error.
func (s *S3) Put(ctx context.Context, name string, write func(io.Writer) error) error {
	if _, err := s.client.StatObject(ctx, s.bucket, s.key(name), minio.StatObjectOptions{}); err == nil {
		return fmt.Errorf("%s already exists", s.Where(name))
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		_, err := s.client.PutObject(ctx, s.bucket, s.key(name), pr, -1, minio.PutObjectOptions{
			ContentType: "application/octet-stream",
			PartSize:    s3PartSize,
			// No aws-chunked payload signing on plain HTTP (minio-go's
			// default there): many S3-compatible servers mishandle it in
			// multipart parts, and age authenticates the archive anyway.
			DisableContentSha256: true,
		})
		pr.CloseWithError(err) // unblocks the writer if the upload failed
		done <- err
	}()
	werr := write(pw)
	if werr != nil {
		pw.CloseWithError(werr)
		cancel()
		<-done
		return werr
	}
	pw.Close()
	if err := <-done; err != nil {
		return fmt.Errorf("upload to %s: %w", s.Where(name), err)
	}
	return nil
}

func (s *S3) Open(ctx context.Context, name string) (io.ReadCloser, error) {
	// Stat first: GetObject is lazy and would report a missing object only
	// on the first read.
	if _, err := s.client.StatObject(ctx, s.bucket, s.key(name), minio.StatObjectOptions{}); err != nil {
		return nil, fmt.Errorf("open %s: %w", s.Where(name), err)
	}
	obj, err := s.client.GetObject(ctx, s.bucket, s.key(name), minio.GetObjectOptions{})
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", s.Where(name), err)
	}
	return obj, nil
}

func (s *S3) List(ctx context.Context) ([]string, error) {
	prefix := ""
	if s.prefix != "" {
		prefix = s.prefix + "/"
	}
	var names []string
	for obj := range s.client.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: prefix}) {
		if obj.Err != nil {
			return nil, fmt.Errorf("list %s: %w", s.Where(""), obj.Err)
		}
		if name := strings.TrimPrefix(obj.Key, prefix); IsArchiveName(name) {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	return names, nil
}

func (s *S3) Remove(ctx context.Context, name string) error {
	if !IsArchiveName(name) {
		return fmt.Errorf("refusing to remove %q: not a backup archive name", name)
	}
	if err := s.client.RemoveObject(ctx, s.bucket, s.key(name), minio.RemoveObjectOptions{}); err != nil {
		return fmt.Errorf("prune %s: %w", s.Where(name), err)
	}
	return nil
}
