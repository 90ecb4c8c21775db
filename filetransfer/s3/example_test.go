package s3_test

import (
	"context"
	"log"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"

	fts3 "github.com/go-integration/patterns/filetransfer/s3"
)

// A store on an S3-compatible endpoint (MinIO, Ceph, R2): path-style
// addressing and checksums only where required.
func Example() {
	client := awss3.New(awss3.Options{
		Region:                     "us-east-1",
		BaseEndpoint:               aws.String("http://127.0.0.1:9000"),
		UsePathStyle:               true,
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	})
	store, err := fts3.New(client, "exports", fts3.WithPartSize(64<<20)) // up to 625 GiB per file
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	if err := store.Check(ctx); err != nil { // bucket missing, credentials refused, endpoint down
		log.Fatal(err)
	}
	w, err := store.Create(ctx, "hello.csv")
	if err != nil {
		log.Fatal(err)
	}
	if _, err := w.Write([]byte("id\n1\n")); err != nil {
		_ = w.Abort()
		log.Fatal(err)
	}
	if err := w.Commit(); err != nil {
		log.Fatal(err)
	}
	link, expires, err := store.URL(ctx, "hello.csv", 7*24*time.Hour)
	if err != nil {
		log.Fatal(err)
	}
	log.Println(link, expires)
}
