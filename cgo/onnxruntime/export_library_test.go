package onnxruntime

// SetInstalledLibrary points FindLibrary's installed-library step at p for
// a test; the returned function restores it.
func SetInstalledLibrary(p string) (restore func()) {
	old := installedLibrary
	installedLibrary = p
	return func() { installedLibrary = old }
}
