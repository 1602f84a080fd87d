package report_test

import (
	"github.com/mnguard/mnguard/server/api"
	"github.com/mnguard/mnguard/server/report"
)

// The collector's API takes a Renderer as its ReportRenderer. (The
// assertion lives in a test: api may import this package.)
var _ api.ReportRenderer = (*report.Renderer)(nil)
