//! The errors of the server core. The API crates map each variant to a Matrix error code.

/// A result with the server core's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong in the server core.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is not allowed for this user (`M_FORBIDDEN`).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The thing asked for does not exist or is not visible (`M_NOT_FOUND`).
    #[error("not found: {0}")]
    NotFound(String),
    /// The request is well-formed JSON but its content is wrong (`M_BAD_JSON`).
    #[error("bad request: {0}")]
    BadJson(String),
    /// A parameter is invalid (`M_INVALID_PARAM`).
    #[error("invalid parameter: {0}")]
    InvalidParam(String),
    /// The user ID is already taken (`M_USER_IN_USE`).
    #[error("user id already taken")]
    UserInUse,
    /// The user ID is not a valid local user ID (`M_INVALID_USERNAME`).
    #[error("invalid username: {0}")]
    InvalidUsername(String),
    /// The room alias is already taken or the room is in a state that conflicts (`M_ROOM_IN_USE`).
    #[error("room in use: {0}")]
    RoomInUse(String),
    /// The room version is not supported (`M_UNSUPPORTED_ROOM_VERSION`).
    #[error("unsupported room version: {0}")]
    UnsupportedRoomVersion(String),
    /// The access token is unknown or expired (`M_UNKNOWN_TOKEN`).
    #[error("unknown access token")]
    UnknownToken,
    /// Credentials were wrong (`M_FORBIDDEN` on login).
    #[error("invalid credentials")]
    InvalidCredentials,
    /// A resource limit was hit (`M_LIMIT_EXCEEDED` or `M_TOO_LARGE`).
    #[error("limit exceeded: {0}")]
    LimitExceeded(String),
    /// The request or the file it names is larger than this node accepts (`M_TOO_LARGE`).
    #[error("too large: {0}")]
    TooLarge(String),
    /// The media ID already has content (`M_CANNOT_OVERWRITE_MEDIA`).
    #[error("media already uploaded")]
    CannotOverwriteMedia,
    /// The media ID is reserved but its content has not arrived yet (`M_NOT_YET_UPLOADED`).
    #[error("media not yet uploaded")]
    NotYetUploaded,
    /// User-interactive auth must continue; the payload is the UIA response body.
    #[error("user-interactive authentication required")]
    UiaRequired(serde_json::Value),
    /// The feature is switched off on this node (`M_FORBIDDEN` or `M_UNRECOGNIZED`).
    #[error("not enabled: {0}")]
    NotEnabled(String),
    /// A sliding-sync `pos` this node does not hold (`M_UNKNOWN_POS`): the client starts
    /// its connection over.
    #[error("unknown or expired sliding sync position")]
    UnknownPos,
    /// The database failed; the detail is for logs, never for clients.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// Migrations failed.
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Stored data could not be decoded; the detail is for logs, never for clients.
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    /// Any other internal fault; the detail is for logs, never for clients.
    #[error("internal: {0}")]
    Internal(String),
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Corrupt(e.to_string())
    }
}
