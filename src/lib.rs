//! vmemsim
