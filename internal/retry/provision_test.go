package retry

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestProvision(t *testing.T) {
	t.Parallel()
	refused := errors.New("refused")
	for _, tc := range []struct {
		name    string
		results []error // one per attempt
		want    error
		calls   int
	}{
		{"first answer", []error{nil}, nil, 1},
		{"a timed-out attempt is tried again", []error{context.DeadlineExceeded, nil}, nil, 2},
		{"another error is returned at once", []error{refused}, refused, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			calls := 0
			_, err := Provision(context.Background(), func(ctx context.Context) (int, error) {
				if _, ok := ctx.Deadline(); !ok {
					t.Error("an attempt without a deadline")
				}
				calls++
				return calls, tc.results[calls-1]
			})
			if !errors.Is(err, tc.want) || calls != tc.calls {
				t.Errorf("err %v after %d calls, want %v after %d", err, calls, tc.want, tc.calls)
			}
		})
	}
	t.Run("the caller's deadline ends it", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		_, err := Provision(ctx, func(ctx context.Context) (int, error) {
			<-ctx.Done()
			return 0, ctx.Err()
		})
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("err %v, want the deadline", err)
		}
	})
}
