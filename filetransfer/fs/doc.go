// Package fs is a filetransfer.Store in a local folder. Files are written to a
// hidden temporary name in their final folder and renamed into place on
// Commit, so readers see the old file or the new one, never half of one.
// Download links are signed with HMAC-SHA256 and expire; Handler serves them
// and answers 403 to an expired or tampered link.
//
// All access goes through an os.Root opened on the folder, so neither a key
// nor a symbolic link inside the folder can reach files outside it.
package fs
