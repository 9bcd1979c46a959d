package chart

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// The cert-manager.io/v1 kinds the chart renders in certManager mode, with
// the fields of cert-manager's API that the chart can set (cert-manager's
// Go module is not a dependency). Strict decoding into them catches a
// misspelt or misplaced field in the templates.

// Certificate is cert-manager.io/v1 Certificate.
type Certificate struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              CertificateSpec `json:"spec"`
}

// CertificateSpec is the part of Certificate.spec the chart uses.
type CertificateSpec struct {
	SecretName  string                 `json:"secretName"`
	Duration    *metav1.Duration       `json:"duration,omitempty"`
	RenewBefore *metav1.Duration       `json:"renewBefore,omitempty"`
	CommonName  string                 `json:"commonName,omitempty"`
	DNSNames    []string               `json:"dnsNames,omitempty"`
	PrivateKey  *CertificatePrivateKey `json:"privateKey,omitempty"`
	IssuerRef   IssuerRef              `json:"issuerRef"`
}

// CertificatePrivateKey is Certificate.spec.privateKey.
type CertificatePrivateKey struct {
	RotationPolicy string `json:"rotationPolicy,omitempty"`
	Encoding       string `json:"encoding,omitempty"`
	Algorithm      string `json:"algorithm,omitempty"`
	Size           int    `json:"size,omitempty"`
}

// IssuerRef names the issuer of a Certificate.
type IssuerRef struct {
	Name  string `json:"name"`
	Kind  string `json:"kind,omitempty"`
	Group string `json:"group,omitempty"`
}

// Issuer is cert-manager.io/v1 Issuer; the chart only makes self-signed ones.
type Issuer struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		SelfSigned *struct {
			CRLDistributionPoints []string `json:"crlDistributionPoints,omitempty"`
		} `json:"selfSigned,omitempty"`
	} `json:"spec"`
}
