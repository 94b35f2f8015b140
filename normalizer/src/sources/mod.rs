//! One module per source: `parse(input) -> Result<Vec<NormalizedEvent>, NormalizeError>`.

pub mod dialog360;
pub mod instagram;
pub mod mercadopago;
pub mod messenger;
pub mod tawkto;
pub mod telegram;
pub mod twilio;
pub mod webchat;
pub mod whatsapp;
