//! Phi-accrual failure detector (being written).
