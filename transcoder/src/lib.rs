//! This role is not implemented yet. The crate exists so the workspace has the
//! layout the project promises; `palaver` refuses to start this role and says so.
