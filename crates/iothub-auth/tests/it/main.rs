//! Integration tests of `iothub-auth`, one module per area, in one test binary.

mod sas_vectors;
