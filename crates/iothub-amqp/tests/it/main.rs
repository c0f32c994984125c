//! Integration tests of `iothub-amqp`, one module per area, in one test binary.

mod e2e;
