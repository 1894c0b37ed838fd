"""The aggregator service: gRPC servicers around the pure protocol in `mpc`."""
