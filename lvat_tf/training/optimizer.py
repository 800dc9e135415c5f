"""Adam with upstream's beta1 switch (vat_tf train_semisup.py).

TF1 ``AdamOptimizer(learning_rate=lr, beta1=mom)`` is fed lr and beta1 per
epoch; its bias correction uses an accumulator ``beta1_power`` multiplied by
whichever beta1 is fed at each step. Keras' Adam holds beta1 as a Python
float baked into the compiled step and uses beta1**t; this subclass keeps
beta1 in a variable and reproduces the accumulator, so the schedule callback
can switch beta1 at ``epoch_decay_start`` without retracing.
"""
import keras
import tensorflow as tf


@keras.saving.register_keras_serializable("lvat_tf")
class UpstreamAdam(keras.optimizers.Adam):
    """Adam (epsilon-hat form, eps 1e-8) with a variable beta1 and TF1's beta1_power."""

    def __init__(self, learning_rate=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-8, **kwargs):
        super().__init__(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2,
                         epsilon=epsilon, **kwargs)
        self._initial_beta_1 = float(beta_1)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self.beta_1_var = self.add_variable((), initializer=keras.initializers.Constant(
            self._initial_beta_1), dtype="float32", name="beta_1_current",
            aggregation="only_first_replica")
        # TF1's accumulator: created with the beta1 fed at initialisation.
        # Assigned inside the replicated step (tf.distribute): the first
        # replica's value, like Keras' own iteration counter.
        self.beta_1_power = self.add_variable((), initializer=keras.initializers.Constant(
            self._initial_beta_1), dtype="float32", name="beta_1_power",
            aggregation="only_first_replica")

    def set_beta_1(self, value: float):
        self.beta_1_var.assign(value)

    def apply(self, grads, trainable_variables=None):
        # TF1 ApplyAdam: step t's bias correction uses the accumulator *before*
        # the step, beta1_init * prod_{s<t} beta1_s, and the accumulator is then
        # multiplied by the beta1 fed at step t. (Until this was checked against
        # vat_tf_train.npz the port multiplied first, i.e. used prod_{s<=t}
        # beta1_s: the same while beta1 is constant, 0.9/0.5 apart in 1 - power
        # from the beta1 switch on.)
        if not self.built:
            self.build(trainable_variables)
        out = super().apply(grads, trainable_variables)
        self.beta_1_power.assign(self.beta_1_power * self.beta_1_var)
        return out

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        lr = tf.cast(learning_rate, dtype)
        gradient = tf.cast(gradient, dtype)
        b1 = tf.cast(self.beta_1_var, dtype)
        local_step = tf.cast(self.iterations + 1, dtype)
        b1_power = tf.cast(self.beta_1_power, dtype)
        b2_power = tf.pow(tf.cast(self.beta_2, dtype), local_step)
        m = self._momentums[self._get_variable_index(variable)]
        v = self._velocities[self._get_variable_index(variable)]
        alpha = lr * tf.sqrt(1 - b2_power) / (1 - b1_power)
        self.assign_add(m, (gradient - m) * (1 - b1))
        self.assign_add(v, (tf.square(gradient) - v) * (1 - self.beta_2))
        self.assign_sub(variable, m * alpha / (tf.sqrt(v) + self.epsilon))


def upstream_schedule(epoch: int, learning_rate: float, num_epochs: int, epoch_decay_start: int,
                      mom1: float, mom2: float):
    """(lr, beta1) for a 0-based epoch, as vat_tf train_semisup.py.

    Constant lr and beta1 = mom1 before ``epoch_decay_start``; from it on
    lr0 * (num_epochs - epoch) / (num_epochs - epoch_decay_start) and beta1 = mom2.
    """
    if epoch < epoch_decay_start or num_epochs == epoch_decay_start:
        return learning_rate, mom1
    decayed = learning_rate * float(num_epochs - epoch) / float(num_epochs - epoch_decay_start)
    return decayed, mom2
