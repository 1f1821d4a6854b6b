package localratelimit

import "testing"

// FuzzConfig feeds arbitrary configs to the decoder: it must refuse or build, never panic, and a filter it
// builds must handle requests.
func FuzzConfig(f *testing.F) {
	for _, seed := range []string{
		``,
		`{}`,
		benchConfig,
		`{"tokenBucket":{"maxTokens":3,"tokensPerFill":2,"fillInterval":"0.5s"}}`,
		`{"conditions":[{"match":{"metadata":[{"name":"n","rangeMatch":{"start":1,"end":9}},
			{"name":"env","stringMatch":{"safeRegex":{"regex":"a|b"},"ignoreCase":true},"invertMatch":true}]},
			"tokenBucket":{"maxTokens":1,"fillInterval":"1s"}}]}`,
		`{"tokenBucket":{"maxTokens":1,"fillInterval":"0.000000001s"}}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, config []byte) {
		fl, err := Registration().New(config)
		if err != nil {
			return
		}
		ex := request("method", "sayHello", "env", "a", "n", "5")
		for range 3 {
			fl.OnRequest(ex)
		}
	})
}
