package gateway

// HTTP statuses the gateway answers with itself. They are protocol facts,
// named here so the core depends on no HTTP implementation.
const (
	StatusOK                 = 200
	StatusBadRequest         = 400
	StatusUnauthorized       = 401
	StatusPaymentRequired    = 402
	StatusForbidden          = 403
	StatusNotFound           = 404
	StatusTooLarge           = 413
	StatusTooManyRequests    = 429
	StatusInternalError      = 500
	StatusBadGateway         = 502
	StatusServiceUnavailable = 503
)
