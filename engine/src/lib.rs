pub fn _p(){}
pub mod snapshot;
