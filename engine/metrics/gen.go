package metrics

//go:generate env UPDATE_DOCS=1 go test -run TestMetricsReference .
