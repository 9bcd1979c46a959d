package gateway

// HTTP statuses the gateway answers with itself. They are protocol facts,
// named here so the core depends on no HTTP implementation.
const (
	StatusBadRequest    = 400
	StatusUnauthorized  = 401
	StatusNotFound      = 404
	StatusTooLarge      = 413
	StatusInternalError = 500
	StatusBadGateway    = 502
)
