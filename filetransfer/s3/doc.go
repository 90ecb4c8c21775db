// Package s3 is a filetransfer.Store on Amazon S3 or an S3-compatible store,
// through aws-sdk-go-v2.
//
// Objects are streamed with a multipart upload: the store buffers one part
// (WithPartSize) while at most WithConcurrency earlier parts upload, so
// memory per object is (concurrency+1) × part size whatever the object's size.
// An object smaller than one part is sent with a single PutObject. Any error,
// an Abort or the end of the context aborts the multipart upload, so no parts
// are left behind, and the previous version of the object stays in place
// (S3 publishes an object only when its upload completes).
//
// Links are presigned GET URLs, valid for up to seven days (S3's limit; with
// temporary credentials a link also dies when they expire).
//
// Errors wrap the filetransfer sentinels: NoSuchKey is ErrNotFound,
// NoSuchBucket is ErrStoreNotFound, refused credentials are ErrAccessDenied
// and transport failures are ErrUnavailable. The SDK's error stays in the
// chain for errors.As.
package s3
