//! The I/O loop around the update machine.
