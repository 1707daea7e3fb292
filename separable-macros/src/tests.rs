//! Unit tests of the whole pipeline on `proc_macro2` tokens, outside the compiler.
