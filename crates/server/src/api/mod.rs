//! The HTTP APIs: the service-provider REST API (`sp`, BSI TR-03165 model), the admin API
//! (`admin`, onboarding), and the device API (`seram`, GP SERAM).

pub mod seram;
