"""The Repogate gRPC server: settings, composition root, interceptors and servicers."""
